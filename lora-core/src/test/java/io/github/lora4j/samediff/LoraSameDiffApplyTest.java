package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;
import static io.github.lora4j.samediff.Graphs.HIDDEN;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.Graphs.OUT;
import static io.github.lora4j.samediff.Graphs.output;
import static io.github.lora4j.samediff.Graphs.weight;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;

/** {@link LoraSameDiff#apply} on existing graphs of each {@link Kind}, against {@link LoraLinear}. */
class LoraSameDiffApplyTest {

    static final LoraConfig CFG = LoraConfig.builder().rank(3).alpha(6).seed(5).build();
    private static final int N = 12;

    /** W of layer {@code layer} as {@code [out, in]} and its layout in the graph. */
    static WeightLayout layout(Kind kind) {
        return kind == Kind.LINEAR ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
    }

    /** Random non-zero A and B in the graph's adapter for {@code weight}. */
    static void randomAdapter(SameDiff sd, LoraSameDiff a, long seed) {
        DataType type = a.currentA().dataType();
        sd.getArrForVarName(a.loraA().name()).assign(gaussian(type, seed, 0.5, a.currentA().shape()));
        sd.getArrForVarName(a.loraB().name()).assign(gaussian(type, seed + 1, 0.5, a.currentB().shape()));
    }

    /** LoRA on fc0 and fc1 of {@code sd}, each with random A and B drawn from {@code seed}. */
    static LoraSameDiffModel adaptBoth(SameDiff sd, long seed) {
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0", "fc1");
        randomAdapter(sd, lora.adapter(weight(0)), seed);
        randomAdapter(sd, lora.adapter(weight(1)), seed + 2);
        return lora;
    }

    /** A LoraLinear over a copy of the graph's W with the graph's current A and B (and DoRA's m). */
    static LoraLinear eagerOf(SameDiff sd, LoraSameDiff a, String biasName) {
        INDArray b = sd.getArrForVarName(biasName).dup().reshape(-1);
        LoraLinear eager = LoraLinear.wrap(sd.getArrForVarName(a.weightName()).dup('c'), b, a.config(), a.layout());
        if (a.config().useDora()) {
            eager.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a.currentA(), a.currentB(), a.currentMagnitude());
        } else {
            eager.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a.currentA(), a.currentB());
        }
        return eager;
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void outputsAndGradientsEqualLoraLinearsAndOnlyAdaptersGetGradients(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 1);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0");
        LoraSameDiff fc0 = lora.adapter(weight(0));
        assertEquals(layout(kind), fc0.layout());
        randomAdapter(sd, fc0, 40);
        INDArray x = gaussian(DataType.DOUBLE, 2, 1, N, IN);
        INDArray g = gaussian(DataType.DOUBLE, 3, 1, N, HIDDEN);

        LoraLinear eager = eagerOf(sd, fc0, "fc0/bias").train();
        INDArray yEager = eager.forward(x);
        eager.backward(g);
        double dy = maxAbsDiff(output(sd, x, "fc0"), yEager);
        assertTrue(dy < 1e-12, kind + ": outputs differ from LoraLinear's by " + dy);

        // L = Σ fc0 ⊙ G, so dL/dfc0 = G: the upstream gradient LoraLinear.backward received
        SDVariable gc = sd.constant("G", g);
        sd.setLossVariables(sd.getVariable("fc0").mul(gc).sum("probe"));
        List<String> trainable = lora.trainableVariables();
        assertEquals(Set.of("fc0/lora_A", "fc0/lora_B"), Set.copyOf(trainable), "only the adapter is trainable");
        Map<String, INDArray> grads = sd.calculateGradients(Map.of("x", x), trainable);
        assertEquals(Set.copyOf(trainable), grads.keySet());
        double dA = maxAbsDiff(grads.get("fc0/lora_A"), eager.adapter(LoraLinear.DEFAULT_ADAPTER).gradA());
        double dB = maxAbsDiff(grads.get("fc0/lora_B"), eager.adapter(LoraLinear.DEFAULT_ADAPTER).gradB());
        assertTrue(grads.get("fc0/lora_A").amaxNumber().doubleValue() > 1e-3, "a non-trivial gradient");
        assertTrue(dA < 1e-12 && dB < 1e-12, kind + ": dA differs by " + dA + ", dB by " + dB);
        assertEquals(VariableType.CONSTANT, sd.getVariable(weight(0)).getVariableType());
        assertEquals(VariableType.CONSTANT, sd.getVariable(weight(1)).getVariableType());
        assertEquals(VariableType.CONSTANT, sd.getVariable("fc1/bias").getVariableType());
        assertThrows(RuntimeException.class, () -> sd.calculateGradients(Map.of("x", x), weight(0)),
                "a frozen weight has no gradient");
        System.out.printf("samediff %s vs LoraLinear: output %.3g, dA %.3g, dB %.3g%n", kind, dy, dA, dB);
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void fitTrainsTheAdaptersAloneAndLeavesEveryFrozenArrayBitwiseUnchanged(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 10);
        INDArray x = gaussian(DataType.DOUBLE, 11, 1, 64, IN);
        // The target: the graph with a rank-2 change of fc0, which a rank-3 adapter can represent.
        SameDiff teacher = Graphs.build(kind, DataType.DOUBLE, 10);
        INDArray w0 = teacher.getArrForVarName(weight(0));
        INDArray u = gaussian(DataType.DOUBLE, 12, 0.3, w0.rows(), 2);
        w0.addi(u.mmul(gaussian(DataType.DOUBLE, 13, 0.3, 2, w0.columns())));
        INDArray label = output(teacher, x, "fc1");

        Graphs.Snapshot before = Graphs.snapshot(sd);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0/weight", "fc1/weight");
        double[] loss = Graphs.lossBeforeAndAfterFit(sd, x, label, 60);
        System.out.printf("samediff %s fit: MSE %.4g -> %.4g%n", kind, loss[0], loss[1]);
        assertTrue(loss[1] < 0.2 * loss[0], kind + ": MSE " + loss[0] + " -> " + loss[1]);
        for (String frozen : lora.frozenVariables()) {
            assertEquals(before.arrays().get(frozen), Graphs.snapshot(sd).arrays().get(frozen),
                    frozen + " changed bitwise during fit");
        }
        assertEquals(Set.of(weight(0), weight(1), "fc0/bias", "fc1/bias"), Set.copyOf(lora.frozenVariables()));
        assertTrue(lora.adapter(weight(0)).currentB().amaxNumber().doubleValue() > 0, "B was trained");
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void applyingToAGraphTrainedBeforeInThisJvmTrainsTheAdapters(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 20);
        INDArray x = gaussian(DataType.DOUBLE, 21, 1, 32, IN);
        INDArray label = gaussian(DataType.DOUBLE, 22, 1, 32, OUT);
        DataSet data = new DataSet(x, label);
        for (int i = 0; i < 3; i++) {
            sd.fit(data);                            // the base is trained: updater state exists for its variables
        }
        SameDiff target = kind == Kind.FLATBUFFERS ? Graphs.roundTrip(sd) : sd;   // also: trained, saved, loaded
        assertTrue(target.isInitializedTraining());
        INDArray w = target.getArrForVarName(weight(1)).dup();
        LoraSameDiffModel lora = LoraSameDiff.apply(target, CFG, "fc1");
        assertEquals(Set.of("fc1/lora_A", "fc1/lora_B"), target.getUpdaterMap().keySet(),
                "the frozen variables' optimizer state is dropped and the adapters get their own");
        INDArray a0 = lora.adapter(weight(1)).currentA();
        target.fit(data);
        target.fit(data);
        assertNotEquals(0.0, maxAbsDiff(a0, lora.adapter(weight(1)).currentA()), "A was trained");
        assertBitwiseEquals(w, target.getArrForVarName(weight(1)), "W after fit");

        // merge parks the adapters' optimizer state (A and B are constants meanwhile); unmerge gives the same back
        Object adamOfA = target.getUpdaterMap().get("fc1/lora_A");
        lora.merge();
        assertFalse(target.getUpdaterMap().containsKey("fc1/lora_A"));
        lora.unmerge();
        assertSame(adamOfA, target.getUpdaterMap().get("fc1/lora_A"), "the same Adam state after unmerge");
        target.fit(data);
        assertBitwiseEquals(w, target.getArrForVarName(weight(1)), "W after merge, unmerge and fit");
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void adapterGradientsEqualCentralFiniteDifferencesOfTheLoss(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 80);
        LoraSameDiffModel lora = adaptBoth(sd, 81);
        Map<String, INDArray> feed = Map.of("x", gaussian(DataType.DOUBLE, 85, 1, N, IN),
                "label", gaussian(DataType.DOUBLE, 86, 1, N, OUT));
        Map<String, INDArray> grads = sd.calculateGradients(feed, lora.trainableVariables());
        double h = 1e-6;
        for (String v : lora.trainableVariables()) {
            INDArray p = sd.getArrForVarName(v);
            for (long i : new long[] {0, p.length() / 2, p.length() - 1}) {
                double old = p.getDouble(i);
                p.putScalar(i, old + h);
                double up = sd.output(feed, "loss").get("loss").getDouble(0);
                p.putScalar(i, old - h);
                double down = sd.output(feed, "loss").get("loss").getDouble(0);
                p.putScalar(i, old);
                double fd = (up - down) / (2 * h);
                double an = grads.get(v).getDouble(i);
                assertTrue(Math.abs(fd - an) < 1e-7 * Math.max(1, Math.abs(fd)),
                        kind + " " + v + "[" + i + "]: finite difference " + fd + ", gradient " + an);
            }
        }
    }

    @Test
    void mergeAndUnloadMergesWhatIsNotMergedYetAndNothingTwice() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 90);
        LoraSameDiffModel lora = adaptBoth(sd, 91);
        INDArray x = gaussian(DataType.DOUBLE, 95, 1, N, IN);
        INDArray withLora = output(sd, x, "fc1");
        lora.adapter(weight(0)).merge();                // one merged alone
        assertFalse(lora.isMerged());
        assertThrows(IllegalStateException.class, lora::merge, "fc0 is merged already");
        assertThrows(IllegalStateException.class, lora::unmerge, "fc1 is not merged");
        assertTrue(maxAbsDiff(withLora, output(lora.mergeAndUnload(), x, "fc1")) < 1e-12);
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void mergeBypassesTheLoraPathSoTheAdapterIsAppliedOnceAndUnmergeRestoresWBitwise(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 30);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, Pattern.compile("fc\\d"));
        assertEquals(List.of(weight(0), weight(1)), List.copyOf(lora.adapted().keySet()));
        randomAdapter(sd, lora.adapter(weight(0)), 31);
        randomAdapter(sd, lora.adapter(weight(1)), 33);
        INDArray x = gaussian(DataType.DOUBLE, 35, 1, N, IN);
        INDArray w0 = sd.getArrForVarName(weight(0)).dup();
        INDArray expected0 = eagerOf(sd, lora.adapter(weight(0)), "fc0/bias").forward(x);
        INDArray unmerged = output(sd, x, "fc1");

        lora.merge();
        assertTrue(lora.isMerged());
        assertTrue(maxAbsDiff(w0, sd.getArrForVarName(weight(0))) > 1e-3, "merge wrote W in place");
        assertTrue(maxAbsDiff(expected0, output(sd, x, "fc0")) < 1e-12, "fc0 applies the adapter once");
        assertTrue(maxAbsDiff(unmerged, output(sd, x, "fc1")) < 1e-12, "the merged graph computes the same");
        assertEquals(List.of(), lora.trainableVariables(), "A and B are constants while merged");
        assertThrows(IllegalStateException.class, lora::merge);
        assertThrows(IllegalStateException.class, () -> lora.adapter(weight(0)).toLoraLinear());

        lora.unmerge();
        assertBitwiseEquals(w0, sd.getArrForVarName(weight(0)), "W after unmerge");
        assertTrue(maxAbsDiff(unmerged, output(sd, x, "fc1")) < 1e-12);
        assertEquals(4, lora.trainableVariables().size(), "A and B are trainable again");
        assertThrows(IllegalStateException.class, lora::unmerge);
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void mergeAndUnloadGivesTheOriginalStructureWithMergedWeights(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 40);
        Graphs.Snapshot original = Graphs.snapshot(sd);
        LoraSameDiffModel lora = adaptBoth(sd, 41);
        INDArray x = gaussian(DataType.DOUBLE, 45, 1, N, IN);
        INDArray withLora = output(sd, x, "fc1");
        Map<String, INDArray> expectedW = new HashMap<>();
        for (int l = 0; l < 2; l++) {
            LoraLinear eager = eagerOf(sd, lora.adapter(weight(l)), "fc" + l + "/bias");
            eager.merge();
            expectedW.put(weight(l), eager.weight());
        }

        SameDiff plain = lora.mergeAndUnload();
        Graphs.Snapshot after = Graphs.snapshot(plain);
        assertEquals(original.variables(), after.variables(), "the same variables with the same types");
        assertEquals(original.ops(), after.ops(), "the same ops with the same inputs and outputs");
        assertEquals(original.loss(), after.loss());
        for (int l = 0; l < 2; l++) {
            assertBitwiseEquals(expectedW.get(weight(l)), plain.getArrForVarName(weight(l)),
                    "merged W equals LoraLinear's exact merge of the same weights");
        }
        assertTrue(maxAbsDiff(withLora, output(plain, x, "fc1")) < 1e-12);
        assertThrows(IllegalStateException.class, lora::merge, "the model is unusable after unload");
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void unloadGivesBackTheOriginalGraphBitForBit(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.FLOAT, 50);
        Graphs.Snapshot original = Graphs.snapshot(sd);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc1");
        randomAdapter(sd, lora.adapter(weight(1)), 51);
        lora.merge();
        lora.unmerge();
        assertEquals(original, Graphs.snapshot(lora.unload()));
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void savedAdaptersLoadIntoAFreshlyAdaptedGraphAndComputeTheSame(Kind kind, @TempDir Path dir) throws IOException {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 60);
        LoraSameDiffModel lora = adaptBoth(sd, 61);
        lora.save(dir);
        PeftAdapter file = PeftAdapterFiles.read(dir);
        assertEquals(List.of("fc0", "fc1"), List.copyOf(new TreeSet<>(file.modules())), "module names from the weights");
        assertEquals(kind == Kind.LINEAR, file.config().fanInFanOut());

        SameDiff fresh = Graphs.build(kind, DataType.DOUBLE, 60);
        LoraSameDiffModel other = LoraSameDiff.apply(fresh, CFG.toBuilder().alpha(1).build(), "fc0", "fc1");
        other.load(dir);
        assertEquals(CFG.scaling(), other.adapter(weight(0)).config().scaling(), "the file's alpha");
        INDArray x = gaussian(DataType.DOUBLE, 65, 1, N, IN);
        // The file is F32: the loaded adapter is the saved one rounded to float.
        assertTrue(maxAbsDiff(output(sd, x, "fc1"), output(fresh, x, "fc1")) < 1e-5);

        // The same file is a PEFT adapter for a LoraModel over the same weights, module for module.
        LoraModel model = LoraModel.builder()
                .add("fc0", sd.getArrForVarName(weight(0)), sd.getArrForVarName("fc0/bias").reshape(-1), layout(kind))
                .build();
        assertThrows(IllegalArgumentException.class, () -> model.load(dir, "default"), "fc1 is not in this model");
        LoraModel both = LoraModel.builder()
                .add("fc0", sd.getArrForVarName(weight(0)), sd.getArrForVarName("fc0/bias").reshape(-1), layout(kind))
                .add("fc1", sd.getArrForVarName(weight(1)), sd.getArrForVarName("fc1/bias").reshape(-1), layout(kind))
                .build();
        both.load(dir, "default");
        assertTrue(maxAbsDiff(output(sd, x, "fc0"), both.forward("fc0", x)) < 1e-5);
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void keepTrainableLeavesTheChosenVariablesTrainable(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 70);
        LoraSameDiffModel lora = LoraSameDiff.builder(CFG).targets("fc0").keepTrainable("fc1/weight", "fc1/bias").apply(sd);
        assertEquals(Set.of("fc0/lora_A", "fc0/lora_B", "fc1/weight", "fc1/bias"), Set.copyOf(lora.trainableVariables()));
        assertFalse(lora.frozenVariables().contains("fc1/weight"));
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void anAdaptedGraphSurvivesAsFlatBuffersWithItsAdaptersTrainable(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 100);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0", "fc1");
        randomAdapter(sd, lora.adapter(weight(0)), 101);
        SameDiff loaded = Graphs.roundTrip(sd);
        INDArray x = gaussian(DataType.DOUBLE, 102, 1, N, IN);
        assertBitwiseEquals(output(sd, x, "fc1"), output(loaded, x, "fc1"), "the loaded adapted graph");
        assertEquals(Set.copyOf(lora.trainableVariables()), Set.copyOf(loaded.variables().stream()
                .filter(v -> v.getVariableType() == VariableType.VARIABLE).map(SDVariable::name).toList()));
    }
}
