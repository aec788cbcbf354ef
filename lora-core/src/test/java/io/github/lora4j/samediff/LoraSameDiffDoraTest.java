package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.maxAbsDiff;
import static io.github.lora4j.samediff.Graphs.HIDDEN;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.Graphs.OUT;
import static io.github.lora4j.samediff.Graphs.output;
import static io.github.lora4j.samediff.Graphs.weight;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * DoRA on the SameDiff path against {@link LoraLinear}'s DoRA (itself checked against PyTorch): outputs and the
 * gradients of A, B and m in double, fit, merge / unmerge, save / load, unload; and what it refuses.
 */
class LoraSameDiffDoraTest {

    static final LoraConfig DORA = CFG.toBuilder().useDora(true).build();
    private static final int N = 12;

    @TempDir
    Path tmp;

    /** Random A, B and a magnitude 20 % around its start in the graph's DoRA adapter. */
    static void randomDora(SameDiff sd, LoraSameDiff a, long seed) {
        LoraSameDiffApplyTest.randomAdapter(sd, a, seed);
        INDArray m = a.currentMagnitude();
        sd.getArrForVarName(a.magnitudeVariable().name())
                .assign(m.mul(gaussian(m.dataType(), seed + 7, 0.2, m.shape()).add(1)));
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void outputsAndGradientsEqualLoraLinearsDora(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 1);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0");
        LoraSameDiff fc0 = lora.adapter(weight(0));
        randomDora(sd, fc0, 40);
        INDArray x = gaussian(DataType.DOUBLE, 2, 1, N, IN);
        INDArray g = gaussian(DataType.DOUBLE, 3, 1, N, HIDDEN);

        LoraLinear eager = LoraSameDiffApplyTest.eagerOf(sd, fc0, "fc0/bias").train();
        INDArray yEager = eager.forward(x);
        eager.backward(g);
        double dy = maxAbsDiff(output(sd, x, "fc0"), yEager);
        assertTrue(dy < 1e-12, kind + ": outputs differ from LoraLinear's DoRA by " + dy);

        SDVariable gc = sd.constant("G", g);
        sd.setLossVariables(sd.getVariable("fc0").mul(gc).sum("probe"));
        List<String> trainable = lora.trainableVariables();
        assertEquals(Set.of("fc0/lora_A", "fc0/lora_B", "fc0/lora_magnitude_vector"), Set.copyOf(trainable));
        Map<String, INDArray> grads = sd.calculateGradients(Map.of("x", x), trainable);
        var ad = eager.adapter(LoraLinear.DEFAULT_ADAPTER);
        double dA = maxAbsDiff(grads.get("fc0/lora_A"), ad.gradA());
        double dB = maxAbsDiff(grads.get("fc0/lora_B"), ad.gradB());
        double dM = maxAbsDiff(grads.get("fc0/lora_magnitude_vector"), ad.gradMagnitude());
        assertTrue(grads.get("fc0/lora_magnitude_vector").amaxNumber().doubleValue() > 1e-3, "a non-trivial dL/dm");
        assertTrue(dA < 1e-12 && dB < 1e-12 && dM < 1e-12,
                kind + ": dA differs by " + dA + ", dB by " + dB + ", dm by " + dM + " (the norm is detached)");
        assertEquals(3 * (IN + HIDDEN) + HIDDEN, lora.adapterParameterCount());
    }

    @Test
    void aNewDoraLayerStartsAtTheBaseOutputAndMatchesLoraLinearInBothLayouts() {
        for (WeightLayout layout : WeightLayout.values()) {
            SameDiff sd = SameDiff.create();
            SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
            INDArray w = layout == WeightLayout.OUT_IN ? gaussian(DataType.DOUBLE, 5, 0.5, HIDDEN, IN)
                    : gaussian(DataType.DOUBLE, 5, 0.5, IN, HIDDEN);
            INDArray b = gaussian(DataType.DOUBLE, 6, 0.5, HIDDEN);
            LoraSameDiff q = LoraSameDiff.linear(sd, "q", x, w, b, DORA, layout);
            INDArray xv = gaussian(DataType.DOUBLE, 7, 1, N, IN);
            INDArray base = LoraLinear.base(w, b, layout).forward(xv);
            assertTrue(maxAbsDiff(base, output(sd, xv, "q")) < 1e-12, layout + ": B = 0, m = ‖W‖: the base output");
            randomDora(sd, q, 8);
            LoraLinear eager = LoraLinear.wrap(w.dup(), b, DORA, layout);
            eager.setAdapterWeights("default", q.currentA(), q.currentB(), q.currentMagnitude());
            assertTrue(maxAbsDiff(eager.forward(xv), output(sd, xv, "q")) < 1e-12, layout + ": trained DoRA");
        }
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void fitTrainsTheMagnitudeTooAndNeverW(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 10);
        INDArray x = gaussian(DataType.DOUBLE, 11, 1, 64, IN);
        INDArray label = gaussian(DataType.DOUBLE, 12, 1, 64, OUT);
        INDArray w = sd.getArrForVarName(weight(0)).dup();
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0", "fc1");
        INDArray m0 = lora.adapter(weight(0)).currentMagnitude();
        double[] loss = Graphs.lossBeforeAndAfterFit(sd, x, label, 30);
        assertTrue(loss[1] < loss[0], kind + ": loss " + loss[0] + " -> " + loss[1]);
        assertNotEquals(0.0, maxAbsDiff(m0, lora.adapter(weight(0)).currentMagnitude()), "m was trained");
        assertBitwiseEquals(w, sd.getArrForVarName(weight(0)), "W after fit");
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void mergeFoldsDoraIntoWAndUnmergeRestoresItBitwise(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 30);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0", "fc1");
        randomDora(sd, lora.adapter(weight(0)), 31);
        randomDora(sd, lora.adapter(weight(1)), 33);
        INDArray x = gaussian(DataType.DOUBLE, 35, 1, N, IN);
        INDArray w0 = sd.getArrForVarName(weight(0)).dup();
        LoraLinear eager = LoraSameDiffApplyTest.eagerOf(sd, lora.adapter(weight(0)), "fc0/bias");
        INDArray unmerged = output(sd, x, "fc1");

        lora.merge();
        eager.merge();
        assertBitwiseEquals(eager.weight(), sd.getArrForVarName(weight(0)), "the graph's W is LoraLinear's merge");
        assertTrue(maxAbsDiff(unmerged, output(sd, x, "fc1")) < 1e-12, "DoRA applied once: by W, gate 0");
        assertEquals(List.of(), lora.trainableVariables(), "A, B and m are constants while merged");
        lora.unmerge();
        assertBitwiseEquals(w0, sd.getArrForVarName(weight(0)), "W after unmerge");
        assertTrue(maxAbsDiff(unmerged, output(sd, x, "fc1")) < 1e-12);
        assertEquals(6, lora.trainableVariables().size());
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void unloadGivesBackTheOriginalGraphBitForBit(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.FLOAT, 50);
        Graphs.Snapshot original = Graphs.snapshot(sd);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0", "fc1");
        randomDora(sd, lora.adapter(weight(1)), 51);
        lora.merge();
        lora.unmerge();
        assertEquals(original, Graphs.snapshot(lora.unload()));
    }

    @Test
    void mergeAndUnloadKeepsTheDoraOutput() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 90);
        Graphs.Snapshot original = Graphs.snapshot(sd);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0", "fc1");
        randomDora(sd, lora.adapter(weight(0)), 91);
        INDArray x = gaussian(DataType.DOUBLE, 95, 1, N, IN);
        INDArray withDora = output(sd, x, "fc1");
        SameDiff plain = lora.mergeAndUnload();
        assertEquals(original.ops(), Graphs.snapshot(plain).ops(), "the original ops");
        assertTrue(maxAbsDiff(withDora, output(plain, x, "fc1")) < 1e-12);
    }

    @Test
    void theAdaptedGraphSurvivesFlatBuffers() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 70);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0");
        randomDora(sd, lora.adapter(weight(0)), 71);
        INDArray x = gaussian(DataType.DOUBLE, 72, 1, N, IN);
        SameDiff back = Graphs.roundTrip(sd);
        assertTrue(maxAbsDiff(output(sd, x, "fc1"), output(back, x, "fc1")) < 1e-12);
    }

    @Test
    void savedDoraLoadsIntoAFreshlyAdaptedGraphAndALoraModel() throws IOException {
        SameDiff sd = Graphs.build(Kind.LINEAR, DataType.DOUBLE, 60);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0", "fc1");
        randomDora(sd, lora.adapter(weight(0)), 61);
        randomDora(sd, lora.adapter(weight(1)), 63);
        Path dir = tmp.resolve("dora");
        lora.save(dir);
        PeftAdapter file = PeftAdapterFiles.read(dir);
        assertTrue(file.config().useDora());
        assertEquals(Set.of("fc0", "fc1"), file.layout().magnitudes().keySet());

        SameDiff fresh = Graphs.build(Kind.LINEAR, DataType.DOUBLE, 60);
        LoraSameDiffModel other = LoraSameDiff.apply(fresh, DORA, "fc0", "fc1");
        other.load(dir);
        INDArray x = gaussian(DataType.DOUBLE, 65, 1, N, IN);
        assertTrue(maxAbsDiff(output(sd, x, "fc1"), output(fresh, x, "fc1")) < 1e-5, "F32 file");

        SameDiff plainLora = Graphs.build(Kind.LINEAR, DataType.DOUBLE, 60);
        LoraSameDiffModel lm = LoraSameDiff.apply(plainLora, CFG, "fc0", "fc1");
        INDArray a = lm.adapter(weight(0)).currentA();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> lm.load(dir));
        assertTrue(e.getMessage().contains("is DoRA") && e.getMessage().contains("plain LoRA"), e.getMessage());
        assertEquals(a, lm.adapter(weight(0)).currentA(), "nothing loaded");
    }

    @Test
    void doraWithDropoutIsRefusedAndTheGraphUnchanged() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 1);
        Graphs.Snapshot before = Graphs.snapshot(sd);
        LoraConfig withDropout = DORA.toBuilder().dropout(0.1).build();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraSameDiff.apply(sd, withDropout, "fc0"));
        assertTrue(e.getMessage().contains("dropout"), e.getMessage());
        assertEquals(before, Graphs.snapshot(sd));
    }

    @Test
    void unloadRefusesWhileAForeignOpReadsADoraVariableAndChangesNothing() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 80);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, DORA, "fc0");
        sd.getVariable("fc0/lora_magnitude_vector").mul("watch", 2.0);        // someone else reads m
        Graphs.Snapshot before = Graphs.snapshot(sd);
        IllegalStateException e = assertThrows(IllegalStateException.class, lora::unload);
        assertTrue(e.getMessage().contains("'fc0/lora_magnitude_vector'"), e.getMessage());
        assertEquals(before, Graphs.snapshot(sd), "nothing was changed");
    }
}
