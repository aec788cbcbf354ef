package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;
import static io.github.lora4j.model.ModelFixture.FC0;
import static io.github.lora4j.model.ModelFixture.IN;
import static io.github.lora4j.model.ModelFixture.K0;
import static io.github.lora4j.model.ModelFixture.Q0;
import static io.github.lora4j.model.ModelFixture.Q1;
import static io.github.lora4j.model.ModelFixture.TARGETED;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The model-wide adapter operations of {@link LoraModel} (issue 14): each against doing the same per module, and
 * each all or nothing across modules: a refusal caused by a later module leaves every earlier one bitwise as before.
 */
class LoraModelAdapterOpsTest {

    private static void assertSameBits(Map<String, long[]> expected, Map<String, long[]> actual, String what) {
        assertEquals(expected.keySet(), actual.keySet(), what + ": the same arrays");
        expected.forEach((k, v) -> assertArrayEquals(v, actual.get(k), what + ": " + k));
    }

    /** A standalone layer over a copy of module {@code path}'s W and bias with the module's adapters copied in. */
    private static LoraLinear twin(LoraModel model, String path) {
        LoraLinear m = model.module(path);
        LoraLinear t = LoraLinear.base(m.weight().dup(), m.bias() == null ? null : m.bias().reshape(-1).dup(), m.layout());
        for (String n : m.adapterNames()) {
            t.addAdapter(n, m.adapter(n).config());
            t.setAdapterWeights(n, m.loraA(n), m.loraB(n));
            t.setAdapterScale(n, m.adapter(n).scale());
        }
        if (m.activeAdapter() != null) {
            t.setActiveAdapter(m.activeAdapter());
        }
        return t;
    }

    /** {@code x W^T + b} of {@code m}'s weight and bias through a plain layer: the base output. */
    private static INDArray baseOutput(LoraLinear m, INDArray x) {
        return LoraLinear.base(m.weight(), m.bias() == null ? null : m.bias().reshape(-1), m.layout()).forward(x);
    }

    // ---------------------------------------------------------------- deleteAdapter

    @Test
    void deleteAdapterRemovesItFromEveryModuleEmbeddingsToo() {
        INDArray table = gaussian(DataType.DOUBLE, 5, 0.5, 10, IN);
        LoraModel model = LoraModel.builder().embedding("embed", table).linear("q", gaussian(DataType.DOUBLE, 6, 0.4, 8, IN), null)
                .linear("v", gaussian(DataType.DOUBLE, 7, 0.4, 8, IN), null).build();
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("embed", "q", "v"));
        model.addAdapter("a", LoraConfig.builder().rank(1).build());
        model.addAdapter("b", LoraConfig.builder().rank(3).build());
        model.deleteAdapter("a");
        assertEquals(List.of("default", "b"), model.adapterNames());
        assertEquals(List.of("default", "b"), model.embedding("embed").adapterNames());
        for (LoraLinear m : model.loraModules().values()) {
            assertEquals(List.of("default", "b"), m.adapterNames());
        }
        assertEquals("default", model.activeAdapter(), "deleting an inactive adapter keeps the active one");
    }

    @Test
    void deleteAdapterRefusesUnknownPartialAndMergedAdaptersChangingNothing() {
        ModelFixture f = new ModelFixture(10).withAdapters(11);
        LoraModel model = f.model;
        Map<String, long[]> adapters = f.adapterBits();

        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class, () -> model.deleteAdapter("missing"));
        assertTrue(unknown.getMessage().contains("'missing'") && unknown.getMessage().contains("[default, a]"),
                unknown.getMessage());
        assertSameBits(adapters, f.adapterBits(), "after an unknown name");

        // only the first module has "solo": the later ones refuse, so the first keeps it
        model.module(Q0).addAdapter("solo", LoraConfig.builder().rank(1).build());
        IllegalArgumentException partial = assertThrows(IllegalArgumentException.class, () -> model.deleteAdapter("solo"));
        assertTrue(partial.getMessage().contains(FC0), partial.getMessage());
        assertEquals(List.of("default", "a", "solo"), model.module(Q0).adapterNames());
        model.module(Q0).deleteAdapter("solo");

        model.merge();
        Map<String, long[]> merged = f.weightBits();
        IllegalStateException whileMerged = assertThrows(IllegalStateException.class, () -> model.deleteAdapter("default"));
        assertTrue(whileMerged.getMessage().contains("merged") && whileMerged.getMessage().contains("unmerge()"),
                whileMerged.getMessage());
        assertSameBits(merged, f.weightBits(), "W while merged");
        model.deleteAdapter("a");   // not the merged one: allowed
        assertEquals(List.of("default"), model.adapterNames());
        model.unmerge();
    }

    @Test
    void deletingTheActiveAdapterLeavesNoneActiveAndTheBaseOutput() {
        ModelFixture f = new ModelFixture(20).withAdapters(21);
        INDArray x = gaussian(DataType.DOUBLE, 22, 1, 3, IN);
        Map<String, INDArray> base = new LinkedHashMap<>();
        TARGETED.forEach(p -> base.put(p, baseOutput(f.model.module(p), x)));
        f.model.deleteAdapter("default");
        assertNull(f.model.activeAdapter());
        assertEquals(List.of("a"), f.model.adapterNames());
        for (String p : TARGETED) {
            assertNull(f.model.module(p).activeAdapter(), p);
            assertBitwiseEquals(base.get(p), f.model.forward(p, x), p + " without an active adapter");
        }
        assertThrows(IllegalStateException.class, f.model::merge, "nothing to merge");
    }

    // ---------------------------------------------------------------- disable / enable

    @Test
    void adaptersDisabledGivesTheBaseOutputAndRestoresThePreviousStateNested() {
        ModelFixture f = new ModelFixture(30).withAdapters(31);
        LoraModel model = f.model;
        INDArray x = gaussian(DataType.DOUBLE, 32, 1, 3, IN);
        Map<String, INDArray> adapted = new LinkedHashMap<>();
        Map<String, INDArray> base = new LinkedHashMap<>();
        for (String p : TARGETED) {
            adapted.put(p, model.forward(p, x));
            base.put(p, baseOutput(model.module(p), x));
        }
        try (AdaptersDisabled outer = model.adaptersDisabled()) {
            assertFalse(model.adaptersEnabled());
            for (String p : TARGETED) {
                assertBitwiseEquals(base.get(p), model.forward(p, x), p + " disabled");
            }
            try (AdaptersDisabled inner = model.adaptersDisabled()) {
                assertFalse(model.adaptersEnabled());
            }
            assertFalse(model.adaptersEnabled(), "closing the inner handle restores the outer's state: disabled");
            for (String p : TARGETED) {
                assertBitwiseEquals(base.get(p), model.forward(p, x), p + " still disabled");
            }
        }
        assertTrue(model.adaptersEnabled());
        for (String p : TARGETED) {
            assertBitwiseEquals(adapted.get(p), model.forward(p, x), p + " enabled again");
        }

        // previously disabled stays disabled; a module disabled on its own stays so; closing twice does nothing more
        model.module(FC0).disableAdapters();
        AdaptersDisabled handle = model.adaptersDisabled();
        handle.close();
        assertTrue(model.module(Q0).adaptersEnabled() && model.module(Q1).adaptersEnabled());
        assertFalse(model.module(FC0).adaptersEnabled(), "FC0 was off before: it stays off");
        model.disableAdapters();
        handle.close();
        assertFalse(model.adaptersEnabled(), "a second close restores nothing");
        try (AdaptersDisabled again = model.adaptersDisabled()) {
            assertFalse(model.adaptersEnabled());
        }
        assertFalse(model.adaptersEnabled(), "it was disabled before the handle");
        model.enableAdapters();
        assertTrue(model.adaptersEnabled());
    }

    @Test
    void adaptersDisabledRestoresTheModulesToSaveSwitch() {
        ModelFixture f = new ModelFixture(40).withAdapters(41);
        LoraModel model = f.model;
        INDArray copy = gaussian(DataType.DOUBLE, 42, 0.4, 8, IN);
        model.setModuleToSave(K0, copy, null);
        assertSame(copy, model.module(K0).weight());
        try (AdaptersDisabled off = model.adaptersDisabled()) {
            assertSame(f.weights.get(K0), model.module(K0).weight(), "the original is in use while disabled");
        }
        assertSame(copy, model.module(K0).weight());
        model.setModulesToSaveEnabled(false);
        try (AdaptersDisabled off = model.adaptersDisabled()) {
            assertSame(f.weights.get(K0), model.module(K0).weight());
        }
        assertFalse(model.modulesToSaveEnabled(), "it was off before the handle");
        assertSame(f.weights.get(K0), model.module(K0).weight());
    }

    @Test
    void disablingIsRefusedWhileALaterModuleIsMergedAndChangesNoModule() {
        ModelFixture f = new ModelFixture(50).withAdapters(51);
        f.model.module(Q1).merge();     // the last module only
        IllegalStateException e = assertThrows(IllegalStateException.class, f.model::disableAdapters);
        assertTrue(e.getMessage().contains(Q1) && e.getMessage().contains("unmerge()"), e.getMessage());
        assertThrows(IllegalStateException.class, f.model::adaptersDisabled);
        for (String p : TARGETED) {
            assertTrue(f.model.module(p).adaptersEnabled(), p + " still enabled");
        }
        f.model.module(Q1).unmerge();
    }

    // ---------------------------------------------------------------- weighted adapters

    @Property(tries = 15)
    void weightedCombinationsEqualThoseOfEachLayerAlone(@ForAll @DoubleRange(min = -2, max = 2) double w1,
                                                       @ForAll @DoubleRange(min = -2, max = 2) double w2,
                                                       @ForAll @DoubleRange(min = 0.1, max = 3) double scale,
                                                       @ForAll @IntRange(min = 1, max = 3) int svdRank,
                                                       @ForAll long seed) {
        ModelFixture f = new ModelFixture(seed).withAdapters(seed + 1);
        LoraModel model = f.model;
        model.setAdapterScale("a", scale);     // run-time scales count in the combination
        Map<String, LoraLinear> twins = new LinkedHashMap<>();
        TARGETED.forEach(p -> twins.put(p, twin(model, p)));
        double[] w = {w1, w2};
        model.addWeightedAdapter("cat", List.of("default", "a"), w);
        model.addWeightedAdapterSvd("svd", List.of("default", "a"), w, svdRank);
        assertEquals("default", model.activeAdapter());
        for (String p : TARGETED) {
            LoraLinear t = twins.get(p);
            t.addWeightedAdapter("cat", List.of("default", "a"), w);
            t.addWeightedAdapterSvd("svd", List.of("default", "a"), w, svdRank);
            for (String n : List.of("cat", "svd")) {
                assertBitwiseEquals(t.loraA(n), model.module(p).loraA(n), p + " " + n + " A");
                assertBitwiseEquals(t.loraB(n), model.module(p).loraB(n), p + " " + n + " B");
                assertEquals(t.adapter(n).scaling(), model.module(p).adapter(n).scaling(), p + " " + n + " scaling");
            }
        }
    }

    @Test
    void aWeightedCombinationALaterModuleRefusesIsAddedToNoModule() {   // and "cat" above min(in, out) is not refused
        ModelFixture f = new ModelFixture(60).withAdapters(61);
        LoraModel model = f.model;
        model.addAdapter("wide", LoraConfig.builder().rank(3).build());   // 2 + 3 = 5 > min(4, 8) of Q1 only
        f.randomise("wide", 62);
        Map<String, long[]> before = f.adapterBits();
        // a truncated SVD of rank 5 does not exist on Q1 (min(in, out) = 4): refused, on no module added
        IllegalArgumentException svd = assertThrows(IllegalArgumentException.class,
                () -> model.addWeightedAdapterSvd("c", List.of("default", "wide"), new double[] {1, 1}, 5));
        assertTrue(svd.getMessage().contains(Q1) && svd.getMessage().contains("no module"), svd.getMessage());
        for (String p : TARGETED) {
            assertEquals(List.of("default", "a", "wide"), model.module(p).adapterNames(), p);
        }
        assertSameBits(before, f.adapterBits(), "every adapter");
        // the earlier modules could take it: it is the last that refuses
        twin(model, Q0).addWeightedAdapterSvd("c", List.of("default", "wide"), new double[] {1, 1}, 5);
        // concatenated ranks keep rank 5 everywhere, also above Q1's min(in, out), as PEFT's "cat"
        model.addWeightedAdapter("cat", List.of("default", "wide"), new double[] {1, 1});
        for (String p : TARGETED) {
            assertEquals(5, model.module(p).adapter("cat").rank(), p);
        }

        LoraModel withEmbedding = LoraModel.builder().embedding("e", Nd4j.zeros(DataType.DOUBLE, 6, 4)).build();
        withEmbedding.applyLora(LoraConfig.builder().rank(2).build(), List.of("e"));
        IllegalArgumentException emb = assertThrows(IllegalArgumentException.class,
                () -> withEmbedding.addWeightedAdapter("c", List.of("default"), new double[] {1}));
        assertTrue(emb.getMessage().contains("linear modules only"), emb.getMessage());
    }

    // ---------------------------------------------------------------- mixed batches

    @Property(tries = 20)
    void aMixedBatchEqualsEachRowThroughItsOwnAdapter(@ForAll @IntRange(min = 1, max = 9) int n,
                                                      @ForAll @DoubleRange(min = -3, max = 3) double scale,
                                                      @ForAll long seed) {
        ModelFixture f = new ModelFixture(seed).withAdapters(seed + 1);
        LoraModel model = f.model;
        model.setAdapterScale("a", scale);
        INDArray copy = gaussian(DataType.DOUBLE, seed + 2, 0.4, 8, IN);
        model.setModuleToSave(K0, copy, null);
        INDArray x = gaussian(DataType.DOUBLE, seed + 3, 1, n, IN);
        String[] choice = {"default", "a", null, LoraLinear.BASE_MODEL};
        String[] names = new String[n];
        for (int i = 0; i < n; i++) {
            names[i] = choice[(int) Math.floorMod(seed + 7L * i, 4L)];
        }
        for (String p : List.of(Q0, FC0, Q1, K0)) {
            INDArray mixed = model.forward(p, x, names);
            for (int i = 0; i < n; i++) {
                INDArray row = x.getRow(i, true);
                INDArray expected;
                if (names[i] == null || names[i].equals(LoraLinear.BASE_MODEL)) {
                    try (AdaptersDisabled off = model.adaptersDisabled()) {
                        expected = model.forward(p, row);
                    }
                } else {
                    model.setActiveAdapter(names[i]);
                    expected = model.forward(p, row);
                    model.setActiveAdapter("default");
                }
                assertTrue(maxAbsDiff(mixed.getRow(i, true), expected) < 1e-12, p + " row " + i + " (" + names[i] + ")");
            }
        }
    }

    @Test
    void mixedBatchesRefuseBadLengthsUnknownNamesEmbeddingsAndTrainingAcrossAModuleToSave() {
        ModelFixture f = new ModelFixture(70).withAdapters(71);
        INDArray x = gaussian(DataType.DOUBLE, 72, 1, 2, IN);
        IllegalArgumentException len = assertThrows(IllegalArgumentException.class,
                () -> f.model.forward(Q0, x, new String[] {"a"}));
        assertTrue(len.getMessage().contains("2") && len.getMessage().contains("1"), len.getMessage());
        assertThrows(IllegalArgumentException.class, () -> f.model.forward(K0, x, new String[] {"a", "nope"}));
        f.model.train();
        // Training batches mix adapters on LoRA modules and pass plain modules through ...
        assertEquals(2, f.model.forward(Q0, x, new String[] {"a", null}).rows());
        assertEquals(2, f.model.forward(K0, x, new String[] {"a", null}).rows());
        // ... but cannot split a modules_to_save module's rows between the copy and the original.
        f.model.setModuleToSave(K0, gaussian(DataType.DOUBLE, 73, 0.4, 8, IN), null);
        IllegalStateException split = assertThrows(IllegalStateException.class,
                () -> f.model.forward(K0, x, new String[] {"a", null}));
        assertTrue(split.getMessage().contains("modules_to_save"), split.getMessage());
        LoraModel emb = LoraModel.builder().embedding("e", Nd4j.zeros(DataType.DOUBLE, 6, 4)).build();
        assertThrows(IllegalArgumentException.class, () -> emb.forward("e", Nd4j.zeros(DataType.DOUBLE, 2), new String[2]));
    }

    // ---------------------------------------------------------------- mergeAndUnload

    /** {@code W + s·B·A} of module {@code p}'s active adapter, in double and in the module's layout. */
    private static INDArray expectedMerged(LoraLinear m) {
        String n = m.activeAdapter();
        INDArray delta = m.loraB(n).mmul(m.loraA(n)).muli(m.adapter(n).scaling());   // [out, in]
        return m.weight().dup().addi(m.layout() == WeightLayout.OUT_IN ? delta : delta.transpose());
    }

    @Test
    void mergeAndUnloadMergesIntoTheCallersArraysAndDropsTheWrappers() {
        ModelFixture f = new ModelFixture(80).withAdapters(81);
        LoraModel model = f.model;
        model.setAdapterScale("default", 1.5);
        INDArray x = gaussian(DataType.DOUBLE, 82, 1, 3, IN);
        Map<String, INDArray> expected = new LinkedHashMap<>();
        Map<String, INDArray> outputs = new LinkedHashMap<>();
        Map<String, LoraLinear> wrappers = new LinkedHashMap<>();
        for (String p : model.modulePaths()) {
            LoraLinear m = model.module(p);
            wrappers.put(p, m);
            expected.put(p, m.activeAdapter() == null ? m.weight().dup() : expectedMerged(m));
            outputs.put(p, model.forward(p, x));
        }
        long[] k0 = io.github.lora4j.TestData.bits(f.weights.get(K0));

        Map<String, INDArray> out = model.mergeAndUnload();

        assertEquals(model.modulePaths(), List.copyOf(out.keySet()));
        for (String p : model.modulePaths()) {
            assertSame(f.weights.get(p), out.get(p), p + ": the caller's own array, not a copy");
            assertTrue(maxAbsDiff(out.get(p), expected.get(p)) < 1e-12, p + " holds W + s·B·A");
            LoraLinear plain = model.module(p);
            assertSame(f.weights.get(p), plain.weight(), p);
            assertTrue(plain.adapterNames().isEmpty(), p + " has no adapters");
            assertTrue(maxAbsDiff(model.forward(p, x), outputs.get(p)) < 1e-12, p + " computes what it did");
        }
        for (String p : TARGETED) {
            assertNotSame(wrappers.get(p), model.module(p), p + ": the wrapper is dropped");
        }
        assertSame(wrappers.get(K0), model.module(K0), "an untargeted module is kept");
        assertArrayEquals(k0, io.github.lora4j.TestData.bits(f.weights.get(K0)), "untargeted W never written");
        assertTrue(model.loraModules().isEmpty());
        assertTrue(model.adapterNames().isEmpty());
        assertFalse(model.isMerged());
        IllegalStateException merge = assertThrows(IllegalStateException.class, model::merge);
        assertTrue(merge.getMessage().contains("no LoRA applied") && merge.getMessage().contains("applyLora"),
                merge.getMessage());
        assertThrows(IllegalStateException.class, () -> model.addAdapter("x", LoraConfig.defaults()));
        assertThrows(IllegalStateException.class, () -> model.setAdapterScale("default", 2));
        // the plain model can be adapted again, over the merged weights
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q"));
        assertBitwiseEquals(out.get(Q0), model.module(Q0).weight(), "the new wrapper's W is the merged array");
    }

    @Test
    void mergeAndUnloadOfAMergedModelDoesNotMergeTwiceAndKeepsEnabledModulesToSaveCopies() {
        ModelFixture f = new ModelFixture(90).withAdapters(91);
        LoraModel model = f.model;
        INDArray copy = gaussian(DataType.DOUBLE, 92, 0.4, 8, IN);
        model.setModuleToSave(K0, copy, null);
        Map<String, INDArray> expected = new LinkedHashMap<>();
        TARGETED.forEach(p -> expected.put(p, expectedMerged(model.module(p))));
        model.merge();
        Map<String, INDArray> out = model.mergeAndUnload();
        TARGETED.forEach(p -> assertTrue(maxAbsDiff(out.get(p), expected.get(p)) < 1e-12, p + " merged once"));
        assertSame(copy, out.get(K0), "the enabled modules_to_save copy is the module now");
        assertSame(copy, model.module(K0).weight());
        assertTrue(model.modulesToSave().isEmpty());
    }

    @Test
    void aMergeAndUnloadALaterModuleFailsLeavesEveryModuleAsItWas() {
        ModelFixture f = new ModelFixture(100).withAdapters(101);
        LoraModel model = f.model;
        // the last module's update is finite factor by factor but overflows nothing in double: make it NaN-producing
        model.module(Q1).setAdapterWeights("default", Nd4j.valueArrayOf(new long[] {2, IN}, 1e200, DataType.DOUBLE),
                Nd4j.valueArrayOf(new long[] {4, 2}, 1e200, DataType.DOUBLE));
        Map<String, long[]> w = f.weightBits();
        Map<String, long[]> adapters = f.adapterBits();
        Map<String, LoraLinear> wrappers = new LinkedHashMap<>();
        model.modulePaths().forEach(p -> wrappers.put(p, model.module(p)));
        IllegalStateException e = assertThrows(IllegalStateException.class, model::mergeAndUnload);
        assertTrue(e.getMessage().contains(Q1), e.getMessage());
        assertSameBits(w, f.weightBits(), "every W");
        assertSameBits(adapters, f.adapterBits(), "every adapter");
        model.modulePaths().forEach(p -> assertSame(wrappers.get(p), model.module(p), p + " keeps its wrapper"));
        assertFalse(model.isMerged());
        assertEquals(TARGETED, List.copyOf(model.loraModules().keySet()));
    }

    @Test
    void mergedWeightsCopyLeavesTheModelUntouched() {
        ModelFixture f = new ModelFixture(110).withAdapters(111);
        LoraModel model = f.model;
        Map<String, long[]> w = f.weightBits();
        Map<String, LoraLinear> wrappers = new LinkedHashMap<>();
        model.modulePaths().forEach(p -> wrappers.put(p, model.module(p)));
        Map<String, INDArray> copies = model.mergedWeightsCopy();
        for (String p : model.modulePaths()) {
            assertNotSame(f.weights.get(p), copies.get(p), p + ": a new array");
            assertSame(wrappers.get(p), model.module(p));
        }
        for (String p : TARGETED) {
            assertTrue(maxAbsDiff(copies.get(p), expectedMerged(model.module(p))) < 1e-12, p);
        }
        assertSameBits(w, f.weightBits(), "every W");
        assertEquals(List.of("default", "a"), model.adapterNames());
        assertFalse(model.isMerged());
    }

    // ---------------------------------------------------------------- setAdapterScale

    @Property(tries = 15)
    void aModelScaleEqualsTheSameScaleOnEachLayer(@ForAll @DoubleRange(min = -4, max = 4) double scale,
                                                  @ForAll long seed) {
        ModelFixture f = new ModelFixture(seed).withAdapters(seed + 1);
        INDArray x = gaussian(DataType.DOUBLE, seed + 2, 1, 3, IN);
        Map<String, LoraLinear> twins = new LinkedHashMap<>();
        TARGETED.forEach(p -> twins.put(p, twin(f.model, p)));
        f.model.setAdapterScale("default", scale);
        for (String p : TARGETED) {
            twins.get(p).setAdapterScale("default", scale);
            assertEquals(scale, f.model.module(p).adapter("default").scale(), p);
            assertBitwiseEquals(twins.get(p).forward(x), f.model.forward(p, x), p + " at scale " + scale);
        }
    }

    @Test
    void aScaleALaterModuleRefusesChangesNoModule() {
        // a DOUBLE module first, a FLOAT one last: s = 1e300·alpha/r is finite in double only
        LoraModel model = LoraModel.builder().linear("d", gaussian(DataType.DOUBLE, 1, 0.4, 4, 4), null)
                .linear("f", gaussian(DataType.FLOAT, 2, 0.4, 4, 4), null).build();
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("d", "f"));
        model.setAdapterScale("default", 0.5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.setAdapterScale("default", 1e300));
        assertTrue(e.getMessage().contains("module 'f'") && e.getMessage().contains("no module's scale was changed"),
                e.getMessage());
        assertEquals(0.5, model.module("d").adapter("default").scale(), "the earlier module is rolled back");
        assertEquals(Double.doubleToRawLongBits(0.5 * 8 / 2), Double.doubleToRawLongBits(
                model.module("d").adapter("default").scaling()), "its scaling bit for bit");
        assertEquals(0.5, model.module("f").adapter("default").scale());

        model.module("f").merge();
        IllegalStateException merged = assertThrows(IllegalStateException.class, () -> model.setAdapterScale("default", 2));
        assertTrue(merged.getMessage().contains("'f'") && merged.getMessage().contains("unmerge()"), merged.getMessage());
        assertEquals(0.5, model.module("d").adapter("default").scale());
        assertThrows(IllegalArgumentException.class, () -> model.setAdapterScale("missing", 2));
    }

    @Test
    void aRefusedScaleKeepsEveryModulesPendingTrainingForward() {
        // issue 29 item 14: "d" accepted the scale before "f" refused it, and its pending training forward was lost
        LoraModel model = LoraModel.builder().linear("d", gaussian(DataType.DOUBLE, 11, 0.4, 4, 4), null)
                .linear("f", gaussian(DataType.FLOAT, 12, 0.4, 4, 4), null).build();
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("d", "f"));
        LoraLinear d = model.module("d");
        d.setAdapterWeights("default", gaussian(DataType.DOUBLE, 13, 0.5, 2, 4), gaussian(DataType.DOUBLE, 14, 0.5, 4, 2));
        LoraLinear twin = twin(model, "d").train();
        d.train();
        LoraLinear f = model.module("f").train();
        INDArray x = gaussian(DataType.DOUBLE, 15, 1, 3, 4);
        INDArray g = gaussian(DataType.DOUBLE, 16, 1, 3, 4);
        d.forward(x);
        twin.forward(x);
        f.forward(x.castTo(DataType.FLOAT));

        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.setAdapterScale("default", 1e300));
        assertTrue(e.getMessage().contains("module 'f'") && e.getMessage().contains("no module's scale was changed"),
                e.getMessage());

        assertBitwiseEquals(twin.backward(g), d.backward(g), "d's backward after the refused call: dL/dx");
        assertBitwiseEquals(twin.adapter("default").gradA(), d.adapter("default").gradA(), "d's dL/dA");
        assertBitwiseEquals(twin.adapter("default").gradB(), d.adapter("default").gradB(), "d's dL/dB");
        f.backward(g.castTo(DataType.FLOAT));          // f's forward is kept too
    }

    @Test
    void embeddingsTakeTheModelScaleToo() {
        LoraModel model = LoraModel.builder().embedding("e", gaussian(DataType.DOUBLE, 3, 0.5, 6, 4)).build();
        model.applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("e"));
        LoraEmbedding e = model.embedding("e");
        e.setAdapterWeights("default", gaussian(DataType.DOUBLE, 4, 0.5, 2, 6), gaussian(DataType.DOUBLE, 5, 0.5, 4, 2));
        INDArray ids = Nd4j.createFromArray(new long[] {0, 3, 5});
        INDArray before = model.forward("e", ids);
        model.setAdapterScale("default", 3);
        assertEquals(3.0, e.adapter("default").scale());
        assertFalse(maxAbsDiff(before, model.forward("e", ids)) < 1e-12, "the scale changes the output");
        model.setAdapterScale("default", 1);
        assertBitwiseEquals(before, model.forward("e", ids), "scale 1 restores it");
    }
}
