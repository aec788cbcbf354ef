package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.model.LoraModel;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.channels.Channels;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.regex.Pattern;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Round trips over every kind a PEFT file holds: linear LoRA in both layouts, embedding LoRA, mixed ranks and
 * alphas, modules_to_save, list and regex targets, F32 and F64 files (saved by {@link LoraModel}, loaded into a
 * fresh model, saved again byte for byte); and conv LoRA, full tensors and base copies, which lora4j cannot hold in
 * a model, written as raw safetensors and read back with their roles.
 */
class PeftKindsRoundTripTest {

    /** A base model from {@code seed}: the same arrays' values on every call. */
    private static LoraModel base(long seed, WeightLayout layout, boolean withEmbedding) {
        SplittableRandom rng = new SplittableRandom(seed);
        LoraModel.Builder b = LoraModel.builder();
        if (withEmbedding) {
            b.embedding("model.embed_tokens", gaussian(DataType.FLOAT, seed, 1, 4 + rng.nextInt(10), 2 + rng.nextInt(5)));
        }
        String[] names = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            int in = 2 + rng.nextInt(6);
            int out = 2 + rng.nextInt(6);
            INDArray w = layout == WeightLayout.OUT_IN ? gaussian(DataType.FLOAT, seed + i, 1, out, in)
                    : gaussian(DataType.FLOAT, seed + i, 1, in, out);
            b.add("model.layers." + i + ".attn." + names[i], w, null, layout);
        }
        b.linear("score", gaussian(DataType.FLOAT, seed + 9, 1, 2, 3), gaussian(DataType.FLOAT, seed + 10, 1, 2));
        return b.build();
    }

    @Property(tries = 60)
    void everyKindLoraModelHoldsSurvivesSaveLoadAndResavesByteForByte(@ForAll long seed) throws IOException {
        SplittableRandom rng = new SplittableRandom(seed);
        WeightLayout layout = rng.nextBoolean() ? WeightLayout.OUT_IN : WeightLayout.IN_OUT;
        boolean embedding = rng.nextBoolean();
        boolean regex = rng.nextBoolean();
        boolean modulesToSave = rng.nextBoolean();
        DataType fileType = rng.nextBoolean() ? DataType.FLOAT : DataType.DOUBLE;
        LoraModel model = base(seed, layout, embedding);
        LoraConfig cfg = LoraConfig.builder().rank(1).alpha(1 + rng.nextInt(8)).rsLora(rng.nextBoolean()).build();
        if (regex) {
            model.applyLora(cfg, Pattern.compile("model\\..*(proj|tokens)"));
        } else {
            model.applyLora(cfg, embedding ? List.of("q_proj", "k_proj", "v_proj", "embed_tokens")
                    : List.of("q_proj", "k_proj", "v_proj"));
        }
        // A second adapter of mixed ranks and alphas, with random weights, is the one saved.
        Map<String, LoraLinear> linears = new LinkedHashMap<>(model.loraModules());
        for (Map.Entry<String, LoraLinear> e : linears.entrySet()) {
            LoraLinear l = e.getValue();
            int r = 1 + rng.nextInt((int) Math.min(l.inFeatures(), l.outFeatures()));
            LoraConfig c = cfg.toBuilder().rank(r).alpha(1 + rng.nextInt(16)).build();
            l.addAdapter("mixed", c);
            l.setAdapterWeights("mixed", gaussian(DataType.FLOAT, rng.nextLong(), 1, r, l.inFeatures()),
                    gaussian(DataType.FLOAT, rng.nextLong(), 1, l.outFeatures(), r));
        }
        for (LoraEmbedding e : model.loraEmbeddings().values()) {
            int r = 1 + rng.nextInt((int) Math.min(e.numEmbeddings(), e.embeddingDim()));
            e.addAdapter("mixed", cfg.toBuilder().rank(r).alpha(1 + rng.nextInt(16)).build());
            e.setAdapterWeights("mixed", gaussian(DataType.FLOAT, rng.nextLong(), 1, r, e.numEmbeddings()),
                    gaussian(DataType.FLOAT, rng.nextLong(), 1, e.embeddingDim(), r));
        }
        if (modulesToSave) {
            model.setModuleToSave("score", gaussian(DataType.FLOAT, rng.nextLong(), 1, 2, 3),
                    gaussian(DataType.FLOAT, rng.nextLong(), 1, 2));
        }
        model.setBaseModelNameOrPath(rng.nextBoolean() ? null : "org/model-" + rng.nextInt(100));

        Path dir = Files.createTempDirectory("lora4j-kinds");
        Path again = Files.createTempDirectory("lora4j-kinds");
        try {
            PeftAdapterFiles.saver().linears(model.loraModules()).embeddings(model.loraEmbeddings())
                    .modulesToSave(modulesToSave ? Map.of("score", Map.of("weight", model.module("score").weight(),
                            "bias", model.module("score").bias().reshape(2))) : Map.of())
                    .baseModelNameOrPath(model.baseModelNameOrPath()).fileType(fileType)
                    .save(dir, "mixed");
            LoraModel fresh = base(seed, layout, embedding);
            PeftAdapterConfig c = fresh.load(dir, "mixed");
            assertEquals(model.baseModelNameOrPath(), c.baseModelNameOrPath().orElse(null));
            assertEquals(model.modulesToSave(), fresh.modulesToSave());
            for (Map.Entry<String, LoraLinear> e : model.loraModules().entrySet()) {
                LoraLinear copy = fresh.module(e.getKey());
                assertEquals(e.getValue().adapter("mixed").config().rank(), copy.adapter("mixed").rank(), e.getKey());
                assertEquals(e.getValue().adapter("mixed").scaling(), copy.adapter("mixed").scaling(), e.getKey());
                assertBitwiseEquals(e.getValue().loraA("mixed"), copy.loraA("mixed"), e.getKey() + " A");
                assertBitwiseEquals(e.getValue().loraB("mixed"), copy.loraB("mixed"), e.getKey() + " B");
            }
            for (Map.Entry<String, LoraEmbedding> e : model.loraEmbeddings().entrySet()) {
                LoraEmbedding copy = fresh.embedding(e.getKey());
                assertEquals(e.getValue().adapter("mixed").scaling(), copy.adapter("mixed").scaling(), e.getKey());
                assertBitwiseEquals(e.getValue().adapter("mixed").a(), copy.adapter("mixed").a(), e.getKey() + " A");
                assertBitwiseEquals(e.getValue().adapter("mixed").b(), copy.adapter("mixed").b(), e.getKey() + " B");
            }
            if (modulesToSave) {
                assertBitwiseEquals(model.module("score").weight(), fresh.module("score").weight(), "score weight");
                assertBitwiseEquals(model.module("score").bias(), fresh.module("score").bias(), "score bias");
            }
            // Saved again from what was loaded (provenance aside, which names the loaded adapter's ZERO init).
            PeftAdapterFiles.saver().linears(fresh.loraModules()).embeddings(fresh.loraEmbeddings())
                    .modulesToSave(modulesToSave ? Map.of("score", Map.of("weight", fresh.module("score").weight(),
                            "bias", fresh.module("score").bias().reshape(2))) : Map.of())
                    .baseModelNameOrPath(fresh.baseModelNameOrPath()).fileType(fileType)
                    .provenance(model.loraModules().values().iterator().next().adapter("mixed").config())
                    .save(again, "mixed");
            for (String f : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
                byte[] x = Files.readAllBytes(dir.resolve(f));
                byte[] y = Files.readAllBytes(again.resolve(f));
                assertArrayEquals(x, y, () -> f + "\n" + new String(x, 0, Math.min(x.length, 700), StandardCharsets.ISO_8859_1)
                        + "\n" + new String(y, 0, Math.min(y.length, 700), StandardCharsets.ISO_8859_1));
            }
        } finally {
            IoTestData.deleteTree(dir);
            IoTestData.deleteTree(again);
        }
    }

    @Property(tries = 100)
    void everyTensorRoleWrittenAsRawSafetensorsIsReadBackWithItsKindShapeAndBits(@ForAll long seed) throws IOException {
        SplittableRandom rng = new SplittableRandom(seed);
        int r = 1 + rng.nextInt(3);
        Map<String, INDArray> tensors = new TreeMap<>();
        Map<String, Kind> kinds = new TreeMap<>();
        List<String> full = new ArrayList<>();
        int modules = 1 + rng.nextInt(4);
        for (int m = 0; m < modules; m++) {
            String path = "model.layers." + m + ".x";
            int kind = rng.nextInt(5);
            long in = 1 + rng.nextInt(5);
            long out = 1 + rng.nextInt(5);
            switch (kind) {
                case 0 -> {
                    tensors.put("base_model.model." + path + ".lora_A.weight", gaussian(DataType.FLOAT, seed + m, 1, r, in));
                    tensors.put("base_model.model." + path + ".lora_B.weight", gaussian(DataType.FLOAT, seed - m, 1, out, r));
                    kinds.put(path, Kind.LINEAR);
                }
                case 1 -> {
                    tensors.put("base_model.model." + path + ".lora_embedding_A", gaussian(DataType.FLOAT, seed + m, 1, r, in));
                    tensors.put("base_model.model." + path + ".lora_embedding_B", gaussian(DataType.FLOAT, seed - m, 1, out, r));
                    kinds.put(path, Kind.EMBEDDING);
                }
                case 2 -> {
                    int dims = 1 + rng.nextInt(3); // Conv1d, Conv2d, Conv3d
                    long[] a = new long[2 + dims];
                    long[] b = new long[2 + dims];
                    a[0] = r;
                    a[1] = in;
                    b[0] = out;
                    b[1] = r;
                    for (int d = 2; d < a.length; d++) {
                        a[d] = 1 + rng.nextInt(3);
                        b[d] = 1;
                    }
                    tensors.put("base_model.model." + path + ".lora_A.weight", gaussian(DataType.FLOAT, seed + m, 1, a));
                    tensors.put("base_model.model." + path + ".lora_B.weight", gaussian(DataType.FLOAT, seed - m, 1, b));
                    kinds.put(path, Kind.CONV);
                }
                case 3 -> {
                    tensors.put("base_model.model." + path + (rng.nextBoolean() ? ".modules_to_save" : "") + ".weight",
                            gaussian(DataType.FLOAT, seed + m, 1, out, in));
                    tensors.put("base_model.model." + path + ".bias", gaussian(DataType.FLOAT, seed - m, 1, out));
                    full.add(path);
                }
                default -> tensors.put("base_model.model." + path + ".original_module.weight",
                        gaussian(DataType.FLOAT, seed + m, 1, out, in));
            }
        }
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        Safetensors.write(Channels.newChannel(bytes), tensors, Map.of("format", "pt"), Safetensors.Dtype.F32);
        byte[] config = ("{\"peft_type\": \"LORA\", \"r\": " + r + "}").getBytes(StandardCharsets.UTF_8);
        PeftAdapter a = PeftAdapterFiles.read(config, new ByteArrayChannel(bytes.toByteArray()));

        assertEquals(List.copyOf(kinds.keySet()), a.modules());
        assertEquals(full, a.fullModules());
        int seen = 0;
        for (String m : a.modules()) {
            assertEquals(kinds.get(m), a.kind(m), m);
            String[] keys = IoTestData.loraKeys(a, m);
            assertBitwiseEquals(tensors.get(keys[0]), a.a(m), m + " A");
            assertBitwiseEquals(tensors.get(keys[1]), a.b(m), m + " B");
            seen += 2;
        }
        for (String m : a.fullModules()) {
            for (Map.Entry<String, INDArray> t : a.full(m).entrySet()) {
                INDArray written = tensors.getOrDefault("base_model.model." + m + "." + t.getKey(),
                        tensors.get("base_model.model." + m + ".modules_to_save." + t.getKey()));
                assertBitwiseEquals(written, t.getValue(), m + " " + t.getKey());
                seen++;
            }
        }
        for (Map.Entry<String, INDArray> c : a.baseCopies().entrySet()) {
            assertBitwiseEquals(tensors.get("base_model.model." + c.getKey()), c.getValue(), c.getKey());
            seen++;
        }
        assertEquals(tensors.size(), seen, "nothing written is missing from what read returned");
    }
}
