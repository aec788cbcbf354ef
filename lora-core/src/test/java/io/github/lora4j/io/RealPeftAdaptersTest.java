package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The real adapters PEFT wrote (in {@code src/test/resources/real-adapters/}, with their PROVENANCE.md): every
 * tensor is read bit for bit as an independent decoder (Jackson on the header, a little-endian float buffer on the
 * data) sees it, and each loads into a model or is refused as its kind requires.
 */
class RealPeftAdaptersTest {

    @org.junit.jupiter.api.io.TempDir
    Path tmp;

    private static Path real(String name) throws URISyntaxException {
        return Path.of(RealPeftAdaptersTest.class.getResource("/real-adapters/" + name).toURI());
    }

    /** Every F32 tensor of a safetensors file, decoded without lora4j: key to {shape, values}. */
    private static Map<String, Object[]> independentDecode(Path file) throws IOException {
        byte[] all = Files.readAllBytes(file);
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        int n = (int) b.getLong(0);
        JsonNode header = new ObjectMapper().readTree(new String(all, 8, n, java.nio.charset.StandardCharsets.UTF_8));
        Map<String, Object[]> out = new TreeMap<>();
        for (Map.Entry<String, JsonNode> e : header.properties()) {
            if (e.getKey().equals("__metadata__")) {
                continue;
            }
            assertEquals("F32", e.getValue().get("dtype").textValue());
            long[] shape = new ObjectMapper().convertValue(e.getValue().get("shape"), long[].class);
            int begin = e.getValue().get("data_offsets").get(0).intValue();
            int end = e.getValue().get("data_offsets").get(1).intValue();
            float[] v = new float[(end - begin) / 4];
            for (int i = 0; i < v.length; i++) {
                v[i] = b.getFloat(8 + n + begin + 4 * i);
            }
            out.put(e.getKey(), new Object[] {shape, v});
        }
        return out;
    }

    private static void assertSameAsIndependent(Object[] expected, INDArray actual, String what) {
        assertArrayEquals((long[]) expected[0], actual.shape(), what + " shape");
        assertBitwiseEquals(Nd4j.createFromArray((float[]) expected[1]).reshape('c', actual.shape()), actual, what);
    }

    /** Everything read equals the independent decode, and nothing in the file is missing from what was read. */
    private static PeftAdapter readAndCompare(Path dir) throws IOException {
        PeftAdapter a = PeftAdapterFiles.read(dir);
        Map<String, Object[]> raw = independentDecode(dir.resolve(PeftAdapterFiles.MODEL_FILE));
        int seen = 0;
        for (String m : a.modules()) {
            String[] keys = IoTestData.loraKeys(a, m);
            assertSameAsIndependent(raw.get(keys[0]), a.a(m), m + " A");
            assertSameAsIndependent(raw.get(keys[1]), a.b(m), m + " B");
            seen += 2;
        }
        for (String m : a.fullModules()) {
            for (Map.Entry<String, INDArray> t : a.full(m).entrySet()) {
                assertSameAsIndependent(raw.get("base_model.model." + m + "." + t.getKey()), t.getValue(), m);
                seen++;
            }
        }
        assertEquals(raw.size(), seen, "every tensor of the file is in what read returned");
        assertEquals("pt", a.metadata().get("format"));
        return a;
    }

    @Test
    void gpt2Conv1dAdapterOfTrlReadsAndLoadsIntoFanInFanOutLayers() throws Exception {
        Path dir = real("gpt2-conv1d-trl-kto-peft0.8.2");
        PeftAdapter a = readAndCompare(dir);
        assertEquals(12, a.modules().size());
        PeftAdapterConfig c = a.config();
        assertTrue(c.fanInFanOut());
        assertEquals(16, c.r());
        assertEquals(16.0, c.loraAlpha());
        assertEquals(0.05, c.loraDropout());
        assertEquals(List.of("c_attn"), c.targetModules());
        assertEquals("gpt2", c.baseModelNameOrPath().orElseThrow());
        assertEquals("CAUSAL_LM", c.raw().get("task_type").textValue(), "the raw config keeps every key");
        for (String m : a.modules()) {
            assertEquals(Kind.LINEAR, a.kind(m));
            assertArrayEquals(new long[] {16, 768}, a.a(m).shape(), "A stays [r, in] under fan_in_fan_out");
            assertArrayEquals(new long[] {2304, 16}, a.b(m).shape(), "B stays [out, r] under fan_in_fan_out");
        }

        // GPT-2's Conv1D weight is [in, out] = [768, 2304]; one block is enough to check the arithmetic.
        LoraModel.Builder b = LoraModel.builder();
        for (int i = 0; i < 12; i++) {
            b.linearInOut("transformer.h." + i + ".attn.c_attn", Nd4j.zeros(DataType.FLOAT, 768, 2304), null);
        }
        LoraModel model = b.build();
        model.load(dir, "kto");
        assertEquals("gpt2", model.baseModelNameOrPath());
        String m = "transformer.h.3.attn.c_attn";
        INDArray x = gaussian(DataType.FLOAT, 5, 1, 2, 768);
        // W = 0, so y = s x A^T B^T, computed in double.
        INDArray expected = x.castTo(DataType.DOUBLE).mmul(a.a(m).castTo(DataType.DOUBLE).transpose())
                .mmul(a.b(m).castTo(DataType.DOUBLE).transpose()).mul(16.0 / 16);
        INDArray y = model.forward(m, x).castTo(DataType.DOUBLE);
        assertTrue(y.sub(expected).amaxNumber().doubleValue() < 1e-4 * (1 + expected.amaxNumber().doubleValue()),
                "max diff " + y.sub(expected).amaxNumber());
    }

    @Test
    void embeddingAndConv1dAdapterReadsAndLoadsIntoAnEmbeddingAndAFanInFanOutLayer() throws Exception {
        Path dir = real("converted-peft-0.6.1-regression/lora-emb-conv1d");
        PeftAdapter a = readAndCompare(dir);
        assertEquals(Kind.EMBEDDING, a.kind("emb"));
        assertEquals(Kind.LINEAR, a.kind("conv1d"));
        assertArrayEquals(new long[] {8, 100}, a.a("emb").shape());
        assertArrayEquals(new long[] {5, 8}, a.b("emb").shape());
        assertTrue(a.config().baseModelNameOrPath().isEmpty());
        assertEquals("ModelEmbConv1D", a.config().raw().get("auto_mapping").get("base_model_class").textValue());

        // PEFT allows r = 8 above min(in, out) of these toy layers (conv1d is 5 -> 1, emb 100 x 5), and so does
        // lora4j; PeftRegressionLoraEmbConv1dTest checks the loaded model's output against PEFT's formula.
        INDArray table = gaussian(DataType.FLOAT, 1, 1, 100, 5);
        LoraModel model = LoraModel.builder().embedding("emb", table)
                .linearInOut("conv1d", gaussian(DataType.FLOAT, 2, 1, 5, 1), null).build();
        model.load(dir, "default");
        assertBitwiseEquals(a.a("emb"), model.embedding("emb").adapter("default").a(), "emb A as loaded");
        assertBitwiseEquals(a.a("conv1d"), model.module("conv1d").adapter("default").a(), "conv1d A as loaded");
    }

    @Test
    void embeddingLoraOfAHandWrittenFileLoadsAndComputesPeftsFormula() throws Exception {
        // lora_embedding_A [2, 6], lora_embedding_B [3, 2], r = 2, alpha = 3: bytes written by hand, not by lora4j.
        float[] aVals = {0.5f, -1, 2, 0.25f, 0, 3, -0.5f, 1, 1.5f, -2, 0.75f, 4};
        float[] bVals = {1, 2, -1, 0.5f, 3, -2};
        String header = "{\"__metadata__\":{\"format\":\"pt\"},"
                + "\"base_model.model.wte.lora_embedding_A\":{\"dtype\":\"F32\",\"shape\":[2,6],\"data_offsets\":[0,48]},"
                + "\"base_model.model.wte.lora_embedding_B\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[48,72]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("emb"), "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 3,"
                + " \"target_modules\": [\"wte\"], \"use_dora\": false, \"megatron_config\": null}",
                IoTestData.file(header, IoTestData.concat(IoTestData.f32(aVals), IoTestData.f32(bVals))));
        INDArray table = gaussian(DataType.FLOAT, 1, 1, 6, 3);
        LoraModel model = LoraModel.builder().embedding("wte", table).build();
        model.load(dir, "default");
        long[] ids = {5, 0, 5, 2};
        INDArray y = model.forward("wte", Nd4j.createFromArray(ids)).castTo(DataType.DOUBLE);
        for (int i = 0; i < ids.length; i++) {
            for (int j = 0; j < 3; j++) {
                // T[id, j] + s * sum_k A[k, id] B[j, k], s = 3 / 2
                double v = table.getDouble(ids[i], j);
                for (int k = 0; k < 2; k++) {
                    v += aVals[k * 6 + (int) ids[i]] * bVals[j * 2 + k] * 1.5;
                }
                assertEquals(v, y.getDouble(i, j), 1e-5, "row " + i + " col " + j);
            }
        }
    }

    @Test
    void conv2dAdapterLoadsIntoAConvModuleAndComputesPeftsDelta() throws Exception {
        Path dir = real("converted-peft-0.6.1-regression/lora-conv2d");
        PeftAdapter a = readAndCompare(dir);
        assertEquals(Kind.CONV, a.kind("conv2d"));
        assertArrayEquals(new long[] {8, 5, 3, 3}, a.a("conv2d").shape());
        assertArrayEquals(new long[] {10, 8, 1, 1}, a.b("conv2d").shape());

        // A linear module at that path cannot take it: refused, nothing changed.
        LoraModel wrong = LoraModel.builder().linear("conv2d", gaussian(DataType.FLOAT, 3, 1, 10, 45), null).build();
        long[] before = bits(wrong.module("conv2d").weight());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> wrong.load(dir, "default"));
        assertTrue(e.getMessage().contains("module 'conv2d' holds Conv LoRA (A [8, 5, 3, 3] and B [10, 8, 1, 1])")
                && e.getMessage().contains("no LoraConv2d at that path"), e.getMessage());
        assertTrue(wrong.module("conv2d").adapterNames().isEmpty());
        assertArrayEquals(before, bits(wrong.module("conv2d").weight()));

        // nn.Conv2d(5, 10, 3) of PEFT's toy model: stride 1, no padding.
        INDArray w = gaussian(DataType.FLOAT, 4, 1, 10, 5, 3, 3);
        LoraModel model = LoraModel.builder().conv2d("conv2d", w, null, new int[] {1, 1}, new int[] {0, 0}).build();
        model.load(dir, "default");
        // PEFT's merged delta: (B[:, :, 0, 0] @ A.reshape(r, -1)).reshape(out, in, kh, kw) * alpha / r, in double.
        INDArray delta = a.b("conv2d").reshape(10, 8).castTo(DataType.DOUBLE)
                .mmul(a.a("conv2d").reshape(8, 45).castTo(DataType.DOUBLE)).reshape('c', 10, 5, 3, 3).mul(8.0 / 8);
        INDArray merged = model.mergedWeightsCopy().get("conv2d").castTo(DataType.DOUBLE);
        assertTrue(merged.sub(w.castTo(DataType.DOUBLE).add(delta)).amaxNumber().doubleValue() < 1e-5,
                "merged kernel = W + PEFT's delta");
        INDArray x = gaussian(DataType.FLOAT, 5, 1, 2, 5, 6, 6);
        INDArray unmerged = model.forward("conv2d", x);
        model.merge();
        assertTrue(model.forward("conv2d", x).sub(unmerged).amaxNumber().doubleValue() < 1e-4);
        model.unmerge();
        // Saved again, the conv tensors are PEFT's, bit for bit.
        model.save(tmp, "default");
        PeftAdapter again = PeftAdapterFiles.read(tmp);
        assertEquals(Kind.CONV, again.kind("conv2d"));
        assertBitwiseEquals(a.a("conv2d"), again.a("conv2d"), "A");
        assertBitwiseEquals(a.b("conv2d"), again.b("conv2d"), "B");
    }

    @Test
    void modulesToSaveAdapterReplacesTheHeadAndTheOriginalComesBack() throws Exception {
        Path dir = real("converted-peft-0.6.1-regression/lora-mlp-modules-to-save");
        PeftAdapter a = readAndCompare(dir);
        assertEquals(List.of("lin0"), a.modules());
        assertEquals(List.of("lin1"), a.fullModules());
        assertEquals(List.of("lin1"), a.config().modulesToSave());
        assertArrayEquals(new long[] {2, 20}, a.full("lin1").get("weight").shape());

        INDArray w1 = gaussian(DataType.FLOAT, 4, 1, 2, 20);
        INDArray b1 = gaussian(DataType.FLOAT, 5, 1, 2);
        long[] w1Bits = bits(w1);
        LoraModel model = LoraModel.builder().linear("lin0", gaussian(DataType.FLOAT, 6, 1, 20, 10),
                gaussian(DataType.FLOAT, 7, 1, 20)).linear("lin1", w1, b1).build();
        model.load(dir, "default");
        assertEquals(List.of("lin1"), model.modulesToSave());
        assertBitwiseEquals(a.full("lin1").get("weight"), model.module("lin1").weight(), "saved weight in use");
        INDArray x = gaussian(DataType.FLOAT, 8, 1, 3, 20);
        INDArray saved = x.mmul(a.full("lin1").get("weight").transpose()).addRowVector(a.full("lin1").get("bias"));
        assertTrue(model.forward("lin1", x).sub(saved).amaxNumber().doubleValue() < 1e-5);

        model.setModulesToSaveEnabled(false);
        INDArray original = x.mmul(w1.transpose()).addRowVector(b1);
        assertTrue(model.forward("lin1", x).sub(original).amaxNumber().doubleValue() < 1e-5);
        model.setModulesToSaveEnabled(true);
        model.unloadModulesToSave();
        assertTrue(model.modulesToSave().isEmpty());
        assertTrue(model.module("lin1").weight() == w1, "the original module and its arrays come back");
        assertArrayEquals(w1Bits, bits(w1), "the original weight was never written");
    }
}
