package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.io.IoTestData.file;
import static io.github.lora4j.io.IoTestData.f32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * DoRA in PEFT's files: {@code use_dora: true} and {@code base_model.model.<m>.lora_magnitude_vector} (1-D
 * {@code [out]}, no {@code .weight}), read from a file written from the spec independently of lora4j
 * ({@code oracle/peft-dora-f32}, made by {@code oracle/peft_dora_adapter.py}), written and read back, and refused by
 * name where the file and the config disagree or the module cannot carry DoRA.
 */
class DoraFilesTest {

    private static final String Q = "model.layers.0.self_attn.q_proj";
    private static final String V = "model.layers.0.self_attn.v_proj";

    @TempDir
    Path tmp;

    private static Map<String, LoraLinear> doraModel(DataType type, WeightLayout layout, long seed) {
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(6).useDora(true).build();
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        int[][] shapes = {{8, 12}, {8, 6}};
        String[] names = {Q, V};
        for (int i = 0; i < 2; i++) {
            int in = shapes[i][0];
            int out = shapes[i][1];
            INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed + i, 0.5, out, in)
                    : gaussian(type, seed + i, 0.5, in, out);
            LoraLinear l = LoraLinear.wrap(w, null, cfg.forModule(names[i]), layout);
            INDArray mag = l.adapter("default").magnitude().mul(gaussian(type, seed + 10 + i, 0.1, out).add(1));
            l.setAdapterWeights("default", gaussian(type, seed + 20 + i, 0.5, 3, in),
                    gaussian(type, seed + 30 + i, 0.3, out, 3), mag);
            m.put(names[i], l);
        }
        return m;
    }

    private static Map<String, LoraLinear> bare(Map<String, LoraLinear> like) {
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        like.forEach((p, l) -> m.put(p, LoraLinear.base(l.weight().dup(), null, l.layout())));
        return m;
    }

    @Test
    void savedDoraAdapterHasPeftsKeysAndLoadsBackBitwise() throws IOException {
        for (WeightLayout layout : WeightLayout.values()) {
            for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
                Map<String, LoraLinear> model = doraModel(type, layout, 7);
                Path dir = tmp.resolve(layout + "-" + type);
                PeftAdapterFiles.save(dir, model, "default", type);

                JsonNode config = new ObjectMapper().readTree(dir.resolve(PeftAdapterFiles.CONFIG_FILE).toFile());
                assertTrue(config.get("use_dora").asBoolean(), "use_dora written");
                PeftAdapter read = PeftAdapterFiles.read(dir);
                assertTrue(read.config().useDora());
                assertArrayEquals(new long[] {12}, read.layout().magnitudes().get(Q), "1-D [out]");
                assertEquals(List.of(Q, V), List.copyOf(read.layout().magnitudes().keySet()));
                String header = new String(Files.readAllBytes(dir.resolve(PeftAdapterFiles.MODEL_FILE)),
                        java.nio.charset.StandardCharsets.ISO_8859_1);
                assertTrue(header.contains("\"base_model.model." + Q + ".lora_magnitude_vector\""), header);
                assertFalse(header.contains("lora_magnitude_vector.weight"), "no .weight after the magnitude");

                Map<String, LoraLinear> fresh = bare(model);
                PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, fresh, "loaded");
                assertTrue(cfg.useDora());
                INDArray x = gaussian(type, 99, 1, 4, 8);
                for (String p : model.keySet()) {
                    LoraLinear l = fresh.get(p);
                    assertTrue(l.adapter("loaded").isDora());
                    assertBitwiseEquals(model.get(p).adapter("default").magnitude(), l.adapter("loaded").magnitude(),
                            p + " magnitude");
                    l.setActiveAdapter("loaded");
                    assertBitwiseEquals(model.get(p).forward(x), l.forward(x), p + " forward after the round trip");
                }
            }
        }
    }

    @Test
    void independentlyWrittenPeftDoraFileComputesPeftsOutput() throws IOException, URISyntaxException {
        Path dir = Path.of(DoraFilesTest.class.getResource("/oracle/peft-dora-f32").toURI());
        JsonNode expected = new ObjectMapper().readTree(dir.resolve("expected.json").toFile());
        LoraModel.Builder b = LoraModel.builder();
        for (String p : List.of(Q, V)) {
            JsonNode m = expected.get("modules").get(p);
            b.linear(p, OracleAdapterFilesTest.matrix(m.get("W")), vector(m.get("b")));
        }
        LoraModel model = b.build();
        PeftAdapterConfig cfg = model.load(dir, "peft");
        assertTrue(cfg.useDora());
        assertEquals(List.of("q_proj", "v_proj"), model.targetModules());
        INDArray x = OracleAdapterFilesTest.matrix(expected.get("x"));
        for (String p : List.of(Q, V)) {
            JsonNode m = expected.get("modules").get(p);
            assertBitwiseEquals(vector(m.get("magnitude")), model.module(p).adapter("peft").magnitude(), p + " m");
            INDArray y = model.forward(p, x);
            double err = io.github.lora4j.TestData.maxRelativeError(y, OracleAdapterFilesTest.matrix(m.get("y")), 1e-3);
            assertTrue(err < 2e-6, p + ": float32 forward vs PEFT's formula in float64, relative error " + err);
        }
    }

    @Test
    void modelRoundTripKeepsDora() throws IOException {
        LoraModel m = LoraModel.builder().linear("enc.q", gaussian(DataType.FLOAT, 1, 0.4, 6, 8), null)
                .linear("enc.v", gaussian(DataType.FLOAT, 2, 0.4, 5, 6), gaussian(DataType.FLOAT, 3, 0.1, 5)).build()
                .applyLora(LoraConfig.builder().rank(2).alpha(4).useDora(true).build(), List.of("q", "v"));
        for (LoraLinear l : m.loraModules().values()) {
            l.setAdapterWeights("default", gaussian(DataType.FLOAT, 4, 0.3, 2, l.inFeatures()),
                    gaussian(DataType.FLOAT, 5, 0.3, l.outFeatures(), 2), l.adapter("default").magnitude().mul(1.1));
        }
        m.save(tmp.resolve("m"), "default");
        LoraModel fresh = LoraModel.builder().linear("enc.q", gaussian(DataType.FLOAT, 1, 0.4, 6, 8), null)
                .linear("enc.v", gaussian(DataType.FLOAT, 2, 0.4, 5, 6), gaussian(DataType.FLOAT, 3, 0.1, 5)).build();
        fresh.load(tmp.resolve("m"), "default");
        INDArray x = gaussian(DataType.FLOAT, 6, 1, 3, 8);
        assertBitwiseEquals(m.forward("enc.v", m.forward("enc.q", x)), fresh.forward("enc.v", fresh.forward("enc.q", x)),
                "model output after save and load");
        assertEquals(m.trainableParameterCount(), fresh.trainableParameterCount());
        assertEquals(2 * (8 + 6) + 6 + 2 * (6 + 5) + 5, fresh.trainableParameterCount(), "A, B and m of both modules");
    }

    @Test
    void aFileMixingDoraAndLoraModulesCannotBeSaved() {
        Map<String, LoraLinear> model = doraModel(DataType.FLOAT, WeightLayout.OUT_IN, 3);
        LoraLinear plain = LoraLinear.wrap(gaussian(DataType.FLOAT, 1, 1, 4, 8), null, LoraConfig.defaults().toBuilder()
                .rank(2).build());
        model.put("model.layers.0.mlp.up_proj", plain);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(tmp.resolve("mixed"), model, "default"));
        assertTrue(e.getMessage().contains("use_dora for all modules"), e.getMessage());
        assertFalse(Files.exists(tmp.resolve("mixed").resolve(PeftAdapterFiles.MODEL_FILE)));
    }

    // ---------------------------------------------------------------- refusals by name

    private static final String A = "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}";
    private static final String B = "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[3,1],\"data_offsets\":[8,20]}";
    private static final byte[] AB = f32(1, 2, 3, 4, 5);

    private static String mag(String shape, int end) {
        return "\"base_model.model.m.lora_magnitude_vector\":{\"dtype\":\"F32\",\"shape\":" + shape
                + ",\"data_offsets\":[20," + end + "]}";
    }

    private void refused(String config, String header, byte[] data, String... parts) throws IOException {
        Path dir = IoTestData.writeDir(tmp.resolve("r" + (config + header).hashCode()), config, file(header, data));
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message should contain '" + p + "': " + e.getMessage());
        }
    }

    @Test
    void configAndTensorsMustAgreeOnDora() throws IOException {
        String lora = "{\"peft_type\": \"LORA\", \"r\": 1}";
        String dora = "{\"peft_type\": \"LORA\", \"r\": 1, \"use_dora\": true}";
        byte[] withMag = IoTestData.concat(AB, f32(1, 1, 1));
        refused(lora, "{" + A + "," + B + "," + mag("[3]", 32) + "}", withMag, "DoRA's magnitude",
                "no use_dora: true");
        refused(dora, "{" + A + "," + B + "}", AB, "module 'm' has no base_model.model.m.lora_magnitude_vector",
                "use_dora: true");
        refused(dora, "{" + A + "," + B + "," + mag("[4]", 36) + "}", IoTestData.concat(AB, f32(1, 1, 1, 1)),
                "expected lora_magnitude_vector [3]", "got [4]");
        refused(dora, "{" + A + "," + B + "," + mag("[1,3]", 32) + "}", withMag, "non-empty 1-D [out]", "[1, 3]");
        refused(dora, "{" + A + "," + B + "," + mag("[1,3,1,1]", 32) + "}", withMag, "a conv module's",
                "linear modules only");
        String other = "\"base_model.model.x.lora_magnitude_vector\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]}";
        refused(dora, "{" + A + "," + B + "," + mag("[3]", 32).replace("[20,32]", "[32,44]") + "," + other + "}",
                IoTestData.concat(withMag, f32(1, 1, 1)), "module 'x' has a lora_magnitude_vector but no lora_A");
    }

    @Test
    void doraOnAnEmbeddingFileIsRefusedByName() throws IOException {
        String dora = "{\"peft_type\": \"LORA\", \"r\": 1, \"use_dora\": true}";
        String embA = "\"base_model.model.e.lora_embedding_A\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}";
        String embB = "\"base_model.model.e.lora_embedding_B\":{\"dtype\":\"F32\",\"shape\":[3,1],\"data_offsets\":[8,20]}";
        String embM = "\"base_model.model.e.lora_magnitude_vector\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]}";
        refused(dora, "{" + embA + "," + embB + "," + embM + "}", IoTestData.concat(AB, f32(1, 1, 1)),
                "module 'e' is EMBEDDING LoRA", "linear modules only");
        refused(dora, "{" + embA + "," + embB + "}", AB, "module 'e' has no", "linear modules only");
    }

    @Test
    void aNonFiniteMagnitudeIsRefusedAndNothingIsLoaded() throws IOException {
        String dora = "{\"peft_type\": \"LORA\", \"r\": 1, \"use_dora\": true}";
        Path dir = IoTestData.writeDir(tmp.resolve("nan"), dora,
                file("{" + A + "," + B + "," + mag("[3]", 32) + "}", IoTestData.concat(AB, f32(1, Float.NaN, 1))));
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        model.put("m", LoraLinear.base(gaussian(DataType.FLOAT, 1, 1, 3, 2), null, WeightLayout.OUT_IN));
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> PeftAdapterFiles.load(dir, model, "d"));
        assertTrue(e.getMessage().contains("lora_magnitude_vector: expected finite values"), e.getMessage());
        assertEquals(List.of(), model.get("m").adapterNames());
    }

    @Test
    void applyingDoraToAModelWithTargetedEmbeddingsIsRefusedWholly() {
        LoraModel m = LoraModel.builder().linear("q", gaussian(DataType.FLOAT, 1, 1, 4, 4), null)
                .embedding("embed", gaussian(DataType.FLOAT, 2, 1, 10, 4)).build();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> m.applyLora(LoraConfig.builder().rank(2).useDora(true).build(), List.of("q", "embed")));
        assertTrue(e.getMessage().contains("linear modules only") && e.getMessage().contains("[embed]"),
                e.getMessage());
        assertEquals(List.of(), m.module("q").adapterNames(), "nothing applied");
        LoraEmbedding emb = m.embedding("embed");
        assertEquals(List.of(), emb.adapterNames());
    }

    private static INDArray vector(JsonNode values) {
        float[] v = new float[values.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) values.get(i).doubleValue();
        }
        return Nd4j.createFromArray(v);
    }
}
