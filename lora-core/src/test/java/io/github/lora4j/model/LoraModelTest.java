package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class LoraModelTest {

    private static final int D = 8;
    private static final int H = 16;
    private static final String[] ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"};

    /** Path → weight of a two-block toy transformer: attention projections [D, D], an mlp whose fc is [in, out]. */
    private final Map<String, INDArray> weights = new LinkedHashMap<>();
    private final Map<String, INDArray> biases = new LinkedHashMap<>();

    private LoraModel twoBlocks(DataType type) {
        LoraModel.Builder b = LoraModel.builder();
        long seed = 100;
        for (int layer = 0; layer < 2; layer++) {
            String p = "model.layers." + layer + ".";
            for (String a : ATTN) {
                INDArray w = gaussian(type, seed++, 0.4, D, D);
                weights.put(p + "self_attn." + a, w);
                b.linear(p + "self_attn." + a, w, null);
            }
            INDArray fc = gaussian(type, seed++, 0.4, D, H);       // [in, out], as DL4J stores it
            INDArray fcBias = gaussian(type, seed++, 0.1, H);
            weights.put(p + "mlp.fc", fc);
            biases.put(p + "mlp.fc", fcBias);
            b.linearInOut(p + "mlp.fc", fc, fcBias);
            INDArray proj = gaussian(type, seed++, 0.4, D, H);     // [out, in]
            INDArray projBias = gaussian(type, seed++, 0.1, D);
            weights.put(p + "mlp.proj", proj);
            biases.put(p + "mlp.proj", projBias);
            b.linear(p + "mlp.proj", proj, projBias);
        }
        return b.build();
    }

    /** Gives every adapter of every targeted module non-zero B (and fresh A) so merges change W. */
    private static void randomiseAdapters(LoraModel model, String adapter, long seed, double scale) {
        for (LoraLinear m : model.loraModules().values()) {
            int r = m.adapter(adapter).rank();
            m.setAdapterWeights(adapter, gaussian(m.dataType(), seed++, scale, r, m.inFeatures()),
                    gaussian(m.dataType(), seed++, scale, m.outFeatures(), r));
        }
    }

    @Test
    void reportMatchesPeftForOne4096SquareModuleAtRank8() {
        LoraModel model = LoraModel.builder().linear("q_proj", Nd4j.zeros(DataType.FLOAT, 4096, 4096), null).build();
        model.applyLora(LoraConfig.builder().rank(8).build(), List.of("q_proj"));
        assertEquals(65_536L, model.trainableParameterCount());
        assertEquals(16_842_752L, model.totalParameterCount());
        assertEquals("trainable params: 65,536 || all params: 16,842,752 || trainable%: 0.3891",
                model.trainableParametersReport());
    }

    @Test
    void reportIgnoresTheDefaultLocale() {
        LoraModel model = LoraModel.builder().linear("q_proj", Nd4j.zeros(DataType.FLOAT, 1000, 1200), null).build();
        model.applyLora(LoraConfig.builder().rank(4).build(), List.of("q_proj"));
        Locale saved = Locale.getDefault();
        try {
            Locale.setDefault(Locale.GERMANY); // would print 8.800 and 0,7279 if the locale leaked in
            assertEquals("trainable params: 8,800 || all params: 1,208,800 || trainable%: 0.7280",
                    model.trainableParametersReport());
        } finally {
            Locale.setDefault(saved);
        }
    }

    @Test
    void namesMatchWholePathsOrDottedSuffixesLikePeft() {
        LoraModel model = LoraModel.builder()
                .linear("model.layers.0.self_attn.q_proj", gaussian(DataType.FLOAT, 1, 1, 4, 4), null)
                .linear("model.layers.0.self_attn.xq_proj", gaussian(DataType.FLOAT, 2, 1, 4, 4), null)
                .linear("q_proj", gaussian(DataType.FLOAT, 3, 1, 4, 4), null)
                .linear("model.layers.0.mlp.fc", gaussian(DataType.FLOAT, 4, 1, 4, 4), null)
                .build();
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj", "mlp.fc"));
        assertEquals(List.of("model.layers.0.self_attn.q_proj", "q_proj", "model.layers.0.mlp.fc"),
                List.copyOf(model.loraModules().keySet()));
        assertEquals(List.of("q_proj", "mlp.fc"), model.targetModules());
        assertFalse(model.targetIsRegex());
        assertTrue(ModelAdapters.matchesName("a.b.c", List.of("b.c")));
        assertFalse(ModelAdapters.matchesName("a.bb.c", List.of("b.c")));
        assertFalse(ModelAdapters.matchesName("a.b.c", List.of("a.b")), "a prefix is not a match");
    }

    @Test
    void aRegexMustMatchTheWholePath() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        model.applyLora(LoraConfig.builder().rank(2).build(), Pattern.compile("model\\.layers\\.1\\.self_attn\\.(q|v)_proj"));
        assertEquals(List.of("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"),
                List.copyOf(model.loraModules().keySet()));
        assertTrue(model.targetIsRegex());

        LoraModel other = twoBlocks(DataType.FLOAT);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> other.applyLora(LoraConfig.defaults(), Pattern.compile("q_proj")), "a partial match is not a fullmatch");
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.q_proj"), e.getMessage());
    }

    @Test
    void targetingNothingListsTheAvailableModulesAndChangesNothing() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> model.applyLora(LoraConfig.defaults(), List.of("query", "value")));
        assertTrue(e.getMessage().contains("[query, value]") && e.getMessage().contains("matched no module")
                && e.getMessage().contains("model.layers.1.mlp.proj"), e.getMessage());
        assertTrue(model.loraModules().isEmpty());
        assertEquals(0, model.trainableParameterCount());
        for (String p : model.modulePaths()) {
            assertTrue(model.module(p).adapterNames().isEmpty(), p);
        }
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj")); // still usable afterwards
        assertEquals(2, model.loraModules().size());
    }

    @Test
    void applyingTwiceIsRefused() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        assertThrows(IllegalStateException.class, () -> model.applyLora(LoraConfig.defaults(), List.of("v_proj")));
        assertEquals(2, model.loraModules().size());
    }

    @Test
    void unknownModuleAndBadBuilderInputNameTheProblem() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.forward("nope", Nd4j.zeros(1, D)));
        assertTrue(e.getMessage().contains("unknown module 'nope'") && e.getMessage().contains("mlp.fc"), e.getMessage());
        IllegalArgumentException dup = assertThrows(IllegalArgumentException.class, () -> LoraModel.builder()
                .linear("a", Nd4j.zeros(2, 2), null).linear("a", Nd4j.zeros(2, 2), null));
        assertTrue(dup.getMessage().contains("'a' was already added"), dup.getMessage());
        IllegalArgumentException bias = assertThrows(IllegalArgumentException.class, () -> LoraModel.builder()
                .linear("m", Nd4j.zeros(3, 2), Nd4j.zeros(2)));
        assertTrue(bias.getMessage().startsWith("module 'm': bias: expected shape [3]"), bias.getMessage());
        assertThrows(IllegalArgumentException.class, () -> LoraModel.builder().build());
    }

    @Test
    void forwardEqualsAStandaloneLoraLinearForTargetedModulesAndThePlainLayerOtherwise() {
        LoraModel model = twoBlocks(DataType.DOUBLE);
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).build();
        model.applyLora(cfg, List.of("q_proj", "v_proj", "fc"));
        randomiseAdapters(model, "default", 7, 0.3);
        INDArray x = gaussian(DataType.DOUBLE, 9, 1, 5, D);
        for (String path : List.of("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.fc")) {
            LoraLinear m = model.module(path);
            LoraLinear alone = LoraLinear.wrap(weights.get(path).dup(), biases.containsKey(path) ? biases.get(path).dup() : null,
                    cfg, m.layout());
            alone.setAdapterWeights("default", m.loraA("default"), m.loraB("default"));
            assertBitwiseEquals(alone.forward(x), model.forward(path, x), path);
        }
        // untargeted: exactly x W^T + b
        String proj = "model.layers.0.mlp.proj";
        INDArray h = gaussian(DataType.DOUBLE, 10, 1, 5, H);
        INDArray expected = h.mmul(weights.get(proj).transpose()).addRowVector(biases.get(proj));
        assertTrue(maxAbsDiff(model.forward(proj, h), expected) < 1e-12);
        assertTrue(model.module(proj).adapterNames().isEmpty());
    }

    @Test
    void equalShapedModulesStartFromDifferentADeterministically() {
        LoraConfig cfg = LoraConfig.builder().rank(2).seed(3).build();
        LoraModel m1 = twoBlocks(DataType.FLOAT).applyLora(cfg, List.of("q_proj"));
        LoraModel m2 = twoBlocks(DataType.FLOAT).applyLora(cfg, List.of("q_proj"));
        INDArray a0 = m1.module("model.layers.0.self_attn.q_proj").loraA("default");
        INDArray a1 = m1.module("model.layers.1.self_attn.q_proj").loraA("default");
        assertFalse(java.util.Arrays.equals(bits(a0), bits(a1)), "layers 0 and 1 must not share A");
        assertBitwiseEquals(a0, m2.module("model.layers.0.self_attn.q_proj").loraA("default"), "same seed, same A");
        assertEquals(0.0, m1.module("model.layers.0.self_attn.q_proj").loraB("default").amaxNumber().doubleValue());
    }

    @Test
    void parameterCountsCoverEveryModuleBiasAndAdapter() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        long base = 2L * (4 * D * D + D * H + H + H * D + D);
        assertEquals(base, model.totalParameterCount());
        assertEquals(0, model.trainableParameterCount());
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj", "v_proj"));
        long perAdapter = 4L * 2 * (D + D);
        assertEquals(perAdapter, model.trainableParameterCount());
        assertEquals(base + perAdapter, model.totalParameterCount());
        model.addAdapter("big", LoraConfig.builder().rank(4).build());
        assertEquals(perAdapter, model.trainableParameterCount(), "only the active adapter trains");
        assertEquals(base + perAdapter + 2 * perAdapter, model.totalParameterCount(), "every adapter counts in all params");
        model.setActiveAdapter("big");
        assertEquals(2 * perAdapter, model.trainableParameterCount());
    }

    @Test
    void adaptersAreAddedAndSwitchedOnEveryTargetedModuleAllOrNothing() {
        LoraModel model = twoBlocks(DataType.DOUBLE);
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj", "fc"));
        assertEquals("default", model.activeAdapter());
        // a name taken on one module only (fc, the last one): nothing may be added anywhere
        model.module("model.layers.1.mlp.fc").addAdapter("taken", LoraConfig.builder().rank(1).build());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> model.addAdapter("taken", LoraConfig.builder().rank(2).build()));
        assertTrue(e.getMessage().contains("adapter 'taken' already exists on module") && e.getMessage().contains("model.layers.1.mlp.fc"), e.getMessage());
        model.module("model.layers.1.mlp.fc").deleteAdapter("taken");
        for (LoraLinear m : model.loraModules().values()) {
            assertEquals(List.of("default"), m.adapterNames());
        }
        // fc is 8 -> 16 and q_proj 8 -> 8: rank 9 is above both min(in, out), legal as in PEFT
        model.addAdapter("wide", LoraConfig.builder().rank(9).build());
        for (LoraLinear m : model.loraModules().values()) {
            assertEquals(9, m.adapter("wide").rank());
        }
        model.deleteAdapter("wide");
        model.addAdapter("second", LoraConfig.builder().rank(3).build());
        assertThrows(IllegalArgumentException.class, () -> model.addAdapter("second", LoraConfig.defaults()));
        assertThrows(IllegalArgumentException.class, () -> model.setActiveAdapter("third"));
        assertEquals("default", model.activeAdapter());
        randomiseAdapters(model, "second", 40, 0.3);
        model.setActiveAdapter("second");
        for (LoraLinear m : model.loraModules().values()) {
            assertEquals("second", m.activeAdapter());
        }
        assertEquals(List.of("default", "second"), model.adapterNames());
    }

    @Test
    void mergeThenUnmergeRestoresEveryWeightBitwise() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        model.applyLora(LoraConfig.builder().rank(4).alpha(16).build(), List.of("q_proj", "v_proj", "fc"));
        randomiseAdapters(model, "default", 60, 0.3);
        Map<String, long[]> before = new LinkedHashMap<>();
        weights.forEach((p, w) -> before.put(p, bits(w)));
        INDArray x = gaussian(DataType.FLOAT, 61, 1, 3, D);
        INDArray unmergedOut = model.forward("model.layers.1.mlp.fc", x);
        model.merge();
        assertTrue(model.isMerged());
        assertFalse(java.util.Arrays.equals(before.get("model.layers.0.self_attn.q_proj"),
                bits(weights.get("model.layers.0.self_attn.q_proj"))), "merge writes the caller's W in place");
        assertArrayEquals(before.get("model.layers.0.self_attn.k_proj"), bits(weights.get("model.layers.0.self_attn.k_proj")),
                "an untargeted module is never written");
        assertTrue(maxAbsDiff(model.forward("model.layers.1.mlp.fc", x), unmergedOut) < 1e-5);
        assertThrows(IllegalStateException.class, model::merge);
        assertThrows(IllegalStateException.class, () -> model.setActiveAdapter("default"));
        for (int i = 0; i < 20; i++) {
            model.unmerge();
            model.merge();
        }
        model.unmerge();
        assertThrows(IllegalStateException.class, model::unmerge);
        weights.forEach((p, w) -> assertArrayEquals(before.get(p), bits(w), p + " after 21 exact cycles"));
    }

    @Test
    void aFailedMergeOfOneModuleUnmergesTheOthersBitwise() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        randomiseAdapters(model, "default", 70, 0.3);
        // layer 1's update overflows float32 (finite factors, infinite product), so its merge must fail
        LoraLinear last = model.module("model.layers.1.self_attn.q_proj");
        last.setAdapterWeights("default", Nd4j.valueArrayOf(new long[] {2, D}, 1e20f, DataType.FLOAT),
                Nd4j.valueArrayOf(new long[] {D, 2}, 1e20f, DataType.FLOAT));
        long[] w0 = bits(weights.get("model.layers.0.self_attn.q_proj"));
        long[] w1 = bits(weights.get("model.layers.1.self_attn.q_proj"));
        IllegalStateException e = assertThrows(IllegalStateException.class, model::merge);
        assertTrue(e.getMessage().contains("model.layers.1.self_attn.q_proj") && e.getMessage().contains("1 module(s)"),
                e.getMessage());
        assertFalse(model.module("model.layers.0.self_attn.q_proj").isMerged());
        assertFalse(last.isMerged());
        assertArrayEquals(w0, bits(weights.get("model.layers.0.self_attn.q_proj")), "rolled back bitwise");
        assertArrayEquals(w1, bits(weights.get("model.layers.1.self_attn.q_proj")), "never written");
    }

    @Test
    void mergedWeightsCopyReturnsNewPlainWeightsAndLeavesTheModelAlone() {
        LoraModel model = twoBlocks(DataType.DOUBLE);
        model.applyLora(LoraConfig.builder().rank(4).alpha(8).build(), List.of("v_proj", "fc"));
        randomiseAdapters(model, "default", 80, 0.3);
        Map<String, long[]> before = new LinkedHashMap<>();
        weights.forEach((p, w) -> before.put(p, bits(w)));
        Map<String, INDArray> plain = model.mergedWeightsCopy();
        assertEquals(model.modulePaths(), new ArrayList<>(plain.keySet()));
        INDArray x = gaussian(DataType.DOUBLE, 81, 1, 4, D);
        for (String p : List.of("model.layers.0.self_attn.v_proj", "model.layers.1.mlp.fc", "model.layers.0.self_attn.q_proj")) {
            assertNotSame(weights.get(p), plain.get(p));
            LoraLinear m = model.module(p);
            // a plain layer with the unloaded weight computes what the adapted layer computes
            LoraLinear plainLayer = LoraLinear.base(plain.get(p), m.bias(), m.layout());
            assertTrue(maxAbsDiff(plainLayer.forward(x), model.forward(p, x)) < 1e-12, p);
        }
        assertBitwiseEquals(weights.get("model.layers.0.self_attn.q_proj"), plain.get("model.layers.0.self_attn.q_proj"),
                "untargeted: a copy of W");
        weights.forEach((p, w) -> assertArrayEquals(before.get(p), bits(w), p + " untouched"));
        assertFalse(model.isMerged());
        assertSame(weights.get("model.layers.1.mlp.fc"), model.module("model.layers.1.mlp.fc").weight());

        // while merged, the copies hold the merged weights (the update is not added twice)
        model.merge();
        Map<String, INDArray> whileMerged = model.mergedWeightsCopy();
        for (String p : plain.keySet()) {
            assertTrue(maxAbsDiff(whileMerged.get(p), plain.get(p)) < 1e-12, p);
        }
        model.unmerge();
        weights.forEach((p, w) -> assertArrayEquals(before.get(p), bits(w), p + " after merge/unmerge"));
    }

    @Test
    void mergeNeedsApplyFirst() {
        LoraModel model = twoBlocks(DataType.FLOAT);
        assertThrows(IllegalStateException.class, model::merge);
        assertThrows(IllegalStateException.class, () -> model.addAdapter("x", LoraConfig.defaults()));
        assertThrows(IllegalStateException.class, () -> model.merge(MergeMode.FAST));
    }
}
