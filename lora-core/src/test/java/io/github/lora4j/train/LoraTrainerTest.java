package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.TestData;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.AMSGrad;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.AdaGrad;
import org.nd4j.linalg.learning.config.AdaMax;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nadam;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.RmsProp;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.schedule.ScheduleType;
import org.nd4j.linalg.schedule.StepSchedule;

/**
 * {@link LoraTrainer} (package {@code io.github.lora4j.train}) through its public API; it sits in the core package
 * to share {@link TestData}.
 */
class LoraTrainerTest {

    private static final DataType D = DataType.DOUBLE;

    /** Layer with random W, bias, A and B (non-zero B, so both factors get gradients from the first step). */
    private static LoraLinear layer(DataType type, long seed, int in, int out, int r) {
        return TestData.trainedLayer(type, seed, in, out, LoraConfig.builder().rank(r).alpha(r).build(), true);
    }

    /** One forward/backward of the MSE loss 0.5·‖y − t‖²/n; returns the loss. */
    private static double lossAndBackward(LoraLinear l, INDArray x, INDArray t) {
        INDArray y = l.forward(x);
        INDArray diff = y.sub(t);
        double loss = 0.5 * diff.mul(diff).sumNumber().doubleValue() / x.rows();
        l.backward(diff.divi(x.rows()));
        return loss;
    }

    private static INDArray adapterA(LoraLinear l) {
        return l.adapter(l.activeAdapter()).a();
    }

    private static INDArray adapterB(LoraLinear l) {
        return l.adapter(l.activeAdapter()).b();
    }

    @Test
    void frozenWeightAndBiasAreBitwiseUnchangedAfter200AdamSteps() {
        LoraLinear l = layer(DataType.FLOAT, 1, 12, 9, 3);
        INDArray w0 = l.weight().dup();
        INDArray b0 = l.bias().dup();
        INDArray a0 = adapterA(l).dup();
        INDArray x = gaussian(DataType.FLOAT, 2, 1, 32, 12);
        INDArray t = gaussian(DataType.FLOAT, 3, 1, 32, 9);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-2)).weightDecay(0.01).clipGradientNorm(5)
                .build(l);
        l.train();
        for (int i = 0; i < 200; i++) {
            lossAndBackward(l, x, t);
            trainer.step();
        }
        assertBitwiseEquals(w0, l.weight(), "W after 200 Adam steps");
        assertBitwiseEquals(b0, l.bias(), "bias after 200 Adam steps");
        assertTrue(adapterA(l).sub(a0).norm2Number().doubleValue() > 1e-3, "A must have been trained");
        assertEquals(200, trainer.iteration());
    }

    @Test
    void lossFallsBelowOnePercentOnALowRankFittingTask() {
        int in = 16;
        int out = 12;
        LoraLinear l = LoraLinear.wrap(gaussian(D, 10, 0.5, out, in), null,
                LoraConfig.builder().rank(4).alpha(4).build());
        // Target: a known rank-3 update of the frozen weight, reachable by a rank-4 adapter.
        INDArray delta = gaussian(D, 11, 0.5, out, 3).mmul(gaussian(D, 12, 0.5, 3, in));
        INDArray x = gaussian(D, 13, 1, 64, in);
        INDArray t = x.mmul(l.weight().add(delta).transpose());
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(2e-2)).build(l);
        l.train();
        double initial = lossAndBackward(l, x, t);
        trainer.step();
        double last = initial;
        for (int i = 0; i < 1500; i++) {
            last = lossAndBackward(l, x, t);
            trainer.step();
        }
        assertTrue(last < 0.01 * initial, "final loss " + last + " should be < 1 % of initial " + initial);
    }

    @Test
    void updaterStateIsStateSizePerParameterTimesAdapterParametersAndNothingForW() {
        checkStateSize(new Sgd(0.1), 0);
        checkStateSize(new Nesterovs(0.1, 0.9), 1);
        checkStateSize(new Adam(0.1), 2);
    }

    private static void checkStateSize(IUpdater updater, int perParameter) {
        LoraLinear l1 = layer(D, 20, 10, 7, 3);
        LoraLinear l2 = layer(D, 30, 5, 6, 2);
        LoraTrainer trainer = LoraTrainer.builder().updater(updater).build(l1, l2);
        long expected = (long) perParameter * (3 * (10 + 7) + 2 * (5 + 6));
        assertEquals(expected, trainer.updaterStateSize(), updater + " state at build");
        l1.addAdapter("other", LoraConfig.builder().rank(4).build());
        l1.setActiveAdapter("other");
        trainer.step();
        assertEquals(expected + perParameter * 4 * (10 + 7), trainer.updaterStateSize(),
                updater + " state after training a second adapter of rank 4");
        l1.deleteAdapter("default");
        trainer.step();
        assertEquals(expected + perParameter * (4 * (10 + 7) - 3 * (10 + 7)), trainer.updaterStateSize(),
                updater + " state after deleting the first adapter");
    }

    @Test
    void everyNd4jUpdaterMovesAAndBAndKeepsItsDocumentedStateSize() {
        IUpdater[] updaters = {new Sgd(0.05), new Adam(0.05), new Nesterovs(0.05, 0.9), new RmsProp(0.05),
                new AdaGrad(0.05), new AdaMax(0.05), new Nadam(0.05), new AMSGrad(0.05), new AdaDelta(),
                new AdaBelief(0.05)};
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
            for (IUpdater u : updaters) {
                LoraLinear l = layer(type, 160, 6, 5, 2);
                INDArray w = l.weight().dup();
                INDArray a = adapterA(l).dup();
                INDArray b = adapterB(l).dup();
                LoraTrainer trainer = LoraTrainer.builder().updater(u).build(l);
                assertEquals(u.stateSize(1) * 2 * (6 + 5), trainer.updaterStateSize(), u + " state size");
                l.train();
                for (int i = 0; i < 3; i++) {
                    lossAndBackward(l, gaussian(type, 161, 1, 8, 6), gaussian(type, 162, 1, 8, 5));
                    trainer.step();
                }
                String what = u.getClass().getSimpleName() + " in " + type;
                // Every element moves: an updater that silently skipped an array would leave it unchanged.
                assertEquals(0, count(adapterA(l).eq(a)), what + ": elements of A left unchanged");
                assertEquals(0, count(adapterB(l).eq(b)), what + ": elements of B left unchanged");
                assertBitwiseEquals(w, l.weight(), what + ": W");
            }
        }
    }

    private static long count(INDArray booleans) {
        return booleans.castTo(DataType.INT32).sumNumber().longValue();
    }

    @Test
    void eachAdapterKeepsItsOwnAdamMomentsAndStepCountAcrossSwitches() {
        // 'default' steps at the trainer's iterations 0 and 2, 'other' at iteration 1 in between. With state and a
        // step count per adapter (PyTorch's per-parameter step), 'default' must end exactly where two Adam steps from
        // its own moments lead, with bias corrections for its own steps 1 and 2 (iterations 0 and 1 to ND4J), as if
        // 'other' had never been trained.
        LoraLinear switching = layer(D, 40, 6, 5, 2);
        switching.addAdapter("other", LoraConfig.builder().rank(3).build());
        LoraTrainer t1 = LoraTrainer.builder().updater(new Adam(0.05)).build(switching);
        INDArray ga1 = gaussian(D, 41, 1, 2, 6);
        INDArray gb1 = gaussian(D, 42, 1, 5, 2);
        INDArray ga2 = gaussian(D, 43, 1, 2, 6);
        INDArray gb2 = gaussian(D, 44, 1, 5, 2);

        setGrads(switching, ga1, gb1);
        t1.step();
        switching.setActiveAdapter("other");
        setGrads(switching, gaussian(D, 45, 1, 3, 6), gaussian(D, 46, 1, 5, 3));
        t1.step();
        switching.setActiveAdapter("default");
        setGrads(switching, ga2, gb2);
        t1.step();

        LoraLinear hand = layer(D, 40, 6, 5, 2);
        INDArray[] m = {Nd4j.zeros(D, 2, 6), Nd4j.zeros(D, 5, 2)};
        INDArray[] v = {Nd4j.zeros(D, 2, 6), Nd4j.zeros(D, 5, 2)};
        INDArray a = adapterA(hand).dup();
        INDArray b = adapterB(hand).dup();
        adamHand(a, ga1, m[0], v[0], 0, 0.05, 0);
        adamHand(b, gb1, m[1], v[1], 0, 0.05, 0);
        adamHand(a, ga2, m[0], v[0], 1, 0.05, 0);
        adamHand(b, gb2, m[1], v[1], 1, 0.05, 0);
        assertClose(a, switching.adapter("default").a(), 1e-12, "A of 'default' after switching away and back");
        assertClose(b, switching.adapter("default").b(), 1e-12, "B of 'default' after switching away and back");
        assertEquals(2 * (2 * 11) + 2 * (3 * 11), t1.updaterStateSize());
        assertEquals(3, t1.iteration(), "the trainer counts its own steps");
    }

    @Test
    void trainingAMergedLayerIsRefusedAndChangesNothing() {
        LoraLinear l = layer(D, 50, 8, 6, 2);
        LoraLinear twin = layer(D, 50, 8, 6, 2);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.01)).build(l);
        LoraTrainer twinTrainer = LoraTrainer.builder().updater(new Adam(0.01)).build(twin);
        setGrads(l, gaussian(D, 51, 1, 2, 8), gaussian(D, 52, 1, 6, 2));
        setGrads(twin, gaussian(D, 51, 1, 2, 8), gaussian(D, 52, 1, 6, 2));
        l.merge();
        INDArray w = l.weight().dup();
        INDArray a = adapterA(l).dup();
        INDArray b = adapterB(l).dup();
        INDArray ga = l.adapter("default").gradA().dup();
        IllegalStateException e = assertThrows(IllegalStateException.class, trainer::step);
        assertTrue(e.getMessage().contains("merged"), e.getMessage());
        assertBitwiseEquals(w, l.weight(), "merged W");
        assertBitwiseEquals(a, adapterA(l), "A");
        assertBitwiseEquals(b, adapterB(l), "B");
        assertBitwiseEquals(ga, l.adapter("default").gradA(), "gradA");
        assertEquals(0, trainer.iteration());
        // Optimizer state untouched: after unmerging, the next step is exactly the twin's first step.
        l.unmerge();
        trainer.step();
        twinTrainer.step();
        assertBitwiseEquals(adapterA(twin), adapterA(l), "A after the refused step and a real one");
        assertBitwiseEquals(adapterB(twin), adapterB(l), "B after the refused step and a real one");
    }

    @Test
    void aNonFiniteGradientIsRefusedAndChangesNothing() {
        LoraLinear good = layer(D, 60, 7, 4, 2);
        LoraLinear bad = layer(D, 61, 5, 5, 3);
        LoraLinear twin = layer(D, 60, 7, 4, 2);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.01)).clipGradientNorm(0.1).build(good, bad);
        LoraTrainer twinTrainer = LoraTrainer.builder().updater(new Adam(0.01)).clipGradientNorm(0.1).build(twin);
        setGrads(good, gaussian(D, 62, 1, 2, 7), gaussian(D, 63, 1, 4, 2));
        setGrads(twin, gaussian(D, 62, 1, 2, 7), gaussian(D, 63, 1, 4, 2));
        INDArray ga = good.adapter("default").gradA().dup();
        INDArray a = adapterA(good).dup();
        for (double poison : new double[] {Double.NaN, Double.POSITIVE_INFINITY}) {
            bad.adapter("default").gradB().putScalar(1, 2, poison);
            IllegalStateException e = assertThrows(IllegalStateException.class, trainer::step);
            assertTrue(e.getMessage().contains("layer 1") && e.getMessage().contains("gradB"), e.getMessage());
            assertBitwiseEquals(a, adapterA(good), "A of the healthy layer");
            assertBitwiseEquals(ga, good.adapter("default").gradA(), "gradA of the healthy layer (not clipped)");
            assertEquals(0, trainer.iteration());
        }
        bad.adapter("default").gradB().putScalar(1, 2, 0.0);
        bad.zeroGrad();
        // Bad layer has zero gradient now; clipping still sees the same global norm as the twin's.
        trainer.step();
        twinTrainer.step();
        assertBitwiseEquals(adapterA(twin), adapterA(good), "A after the refused step and a real one");
        assertBitwiseEquals(adapterB(twin), adapterB(good), "B after the refused step and a real one");
    }

    @Test
    void clippingScalesTheGlobalGradientToMaxNorm() {
        double lr = 0.1;
        double maxNorm = 0.5;
        LoraLinear l1 = layer(D, 70, 4, 3, 2);
        LoraLinear l2 = layer(D, 71, 3, 5, 1);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Sgd(lr)).clipGradientNorm(maxNorm).build(l1, l2);
        INDArray[] g = {gaussian(D, 72, 1, 2, 4), gaussian(D, 73, 1, 3, 2), gaussian(D, 74, 1, 1, 3),
                gaussian(D, 75, 1, 5, 1)};
        double sum = 0;
        for (INDArray gi : g) {
            for (double d : gi.data().asDouble()) {
                sum += d * d;
            }
        }
        double norm = Math.sqrt(sum);
        assertTrue(norm > maxNorm, "test needs a gradient above the threshold, got " + norm);
        setGrads(l1, g[0], g[1]);
        setGrads(l2, g[2], g[3]);
        INDArray[] before = {adapterA(l1).dup(), adapterB(l1).dup(), adapterA(l2).dup(), adapterB(l2).dup()};
        assertEquals(norm, trainer.step(), 1e-12 * norm, "step() returns the norm before clipping");
        INDArray[] after = {adapterA(l1), adapterB(l1), adapterA(l2), adapterB(l2)};
        double stepSquares = 0;
        for (int i = 0; i < 4; i++) {
            INDArray applied = before[i].sub(after[i]);
            assertClose(g[i].mul(lr * maxNorm / norm), applied, 1e-12, "clipped step " + i);
            stepSquares += applied.mul(applied).sumNumber().doubleValue();
        }
        assertEquals(lr * maxNorm, Math.sqrt(stepSquares), 1e-12, "norm of the applied step");
        for (INDArray gi : new INDArray[] {l1.adapter("default").gradA(), l2.adapter("default").gradB()}) {
            assertEquals(0.0, gi.amaxNumber().doubleValue(), "gradients are zeroed after the step");
        }
    }

    @Test
    void gradientsBelowTheClipThresholdAreNotScaled() {
        LoraLinear l = layer(D, 80, 4, 3, 2);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Sgd(0.1)).clipGradientNorm(1e6).build(l);
        INDArray ga = gaussian(D, 81, 1, 2, 4);
        INDArray gb = gaussian(D, 82, 1, 3, 2);
        INDArray a = adapterA(l).dup();
        setGrads(l, ga, gb);
        trainer.step();
        assertClose(a.sub(ga.mul(0.1)), adapterA(l), 1e-12, "unclipped Sgd step");
    }

    @Test
    void sgdStepIsParameterMinusLearningRateTimesGradient() {
        LoraLinear l = layer(D, 90, 9, 7, 3);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Sgd(0.03)).build(l);
        INDArray x = gaussian(D, 91, 1, 5, 9);
        INDArray t = gaussian(D, 92, 1, 5, 7);
        l.train();
        lossAndBackward(l, x, t);
        double[] a = adapterA(l).dup().data().asDouble();
        double[] b = adapterB(l).dup().data().asDouble();
        double[] ga = l.adapter("default").gradA().dup().data().asDouble();
        double[] gb = l.adapter("default").gradB().dup().data().asDouble();
        trainer.step();
        double[] a1 = adapterA(l).dup().data().asDouble();
        double[] b1 = adapterB(l).dup().data().asDouble();
        for (int i = 0; i < a.length; i++) {
            assertEquals(a[i] - 0.03 * ga[i], a1[i], 1e-12, "A[" + i + "]");
        }
        for (int i = 0; i < b.length; i++) {
            assertEquals(b[i] - 0.03 * gb[i], b1[i], 1e-12, "B[" + i + "]");
        }
        assertEquals(0, trainer.updaterStateSize());
    }

    @Test
    void iterationScheduleHalvesTheStepEachIteration() {
        LoraLinear l = layer(D, 100, 4, 4, 2);
        Sgd sgd = new Sgd(new StepSchedule(ScheduleType.ITERATION, 0.2, 0.5, 1));
        LoraTrainer trainer = LoraTrainer.builder().updater(sgd).build(l);
        INDArray ga = gaussian(D, 101, 1, 2, 4);
        INDArray gb = gaussian(D, 102, 1, 4, 2);
        double[] lrs = {0.2, 0.1, 0.05};
        for (double lr : lrs) {
            INDArray a = adapterA(l).dup();
            setGrads(l, ga, gb);
            trainer.step();
            assertClose(ga.mul(lr), a.sub(adapterA(l)), 1e-12, "step at learning rate " + lr);
        }
    }

    @Test
    void epochScheduleFollowsNextEpoch() {
        LoraLinear l = layer(D, 110, 4, 4, 2);
        LoraTrainer trainer = LoraTrainer.builder()
                .updater(new Sgd(new StepSchedule(ScheduleType.EPOCH, 0.2, 0.5, 1))).build(l);
        INDArray ga = gaussian(D, 111, 1, 2, 4);
        INDArray gb = gaussian(D, 112, 1, 4, 2);
        double[][] plan = {{0, 0.2}, {0, 0.2}, {1, 0.1}, {2, 0.05}};
        for (double[] p : plan) {
            while (trainer.epoch() < p[0]) {
                trainer.nextEpoch();
            }
            INDArray a = adapterA(l).dup();
            setGrads(l, ga, gb);
            trainer.step();
            assertClose(ga.mul(p[1]), a.sub(adapterA(l)), 1e-12, "step in epoch " + (int) p[0]);
        }
    }

    @Test
    void adamWithWeightDecayMatchesHandWrittenAdamW() {
        double lr = 0.01;
        double wd = 0.1;
        LoraLinear l = layer(D, 120, 6, 5, 2);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(lr, 0.9, 0.999, 1e-8)).weightDecay(wd).build(l);
        INDArray a = adapterA(l).dup();
        INDArray b = adapterB(l).dup();
        INDArray[] m = {Nd4j.zeros(D, 2, 6), Nd4j.zeros(D, 5, 2)};
        INDArray[] v = {Nd4j.zeros(D, 2, 6), Nd4j.zeros(D, 5, 2)};
        for (int it = 0; it < 5; it++) {
            INDArray ga = gaussian(D, 121 + it, 1, 2, 6);
            INDArray gb = gaussian(D, 131 + it, 0.01, 5, 2); // mixed magnitudes exercise epsilon too
            setGrads(l, ga, gb);
            trainer.step();
            adamHand(a, ga, m[0], v[0], it, lr, wd);
            adamHand(b, gb, m[1], v[1], it, lr, wd);
            assertClose(a, adapterA(l), 1e-12, "A after AdamW step " + it);
            assertClose(b, adapterB(l), 1e-12, "B after AdamW step " + it);
        }
    }

    /**
     * AdamW in plain doubles, with ND4J's Adam conventions: bias correction folded into the step size
     * {@code lr·sqrt(1 − β2^(t+1)) / (1 − β1^(t+1))} and epsilon added to {@code sqrt(v)} (not to the corrected v).
     * Decoupled decay {@code lr·wd·p} is taken from the parameter before the update.
     */
    private static void adamHand(INDArray p, INDArray g, INDArray m, INDArray v, int it, double lr, double wd) {
        double b1 = 0.9;
        double b2 = 0.999;
        double eps = 1e-8;
        double alpha = lr * Math.sqrt(1 - Math.pow(b2, it + 1)) / (1 - Math.pow(b1, it + 1));
        for (long i = 0; i < p.length(); i++) {
            double gi = g.getDouble(i);
            double mi = b1 * m.getDouble(i) + (1 - b1) * gi;
            double vi = b2 * v.getDouble(i) + (1 - b2) * gi * gi;
            m.putScalar(i, mi);
            v.putScalar(i, vi);
            double pi = p.getDouble(i);
            p.putScalar(i, pi - (alpha * mi / (Math.sqrt(vi) + eps) + lr * wd * pi));
        }
    }

    @Test
    void builderRejectsBadSettingsNamingThem() {
        LoraLinear l = layer(D, 140, 3, 3, 1);
        assertTrue(assertThrows(IllegalStateException.class, () -> LoraTrainer.builder().build(l)).getMessage()
                .contains("updater"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> LoraTrainer.builder().clipGradientNorm(0))
                .getMessage().contains("clipGradientNorm"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> LoraTrainer.builder().weightDecay(-1))
                .getMessage().contains("weightDecay"));
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> LoraTrainer.builder().updater(new Sgd(0.1)).build(l, l)).getMessage().contains("same layer"));
        assertThrows(IllegalArgumentException.class,
                () -> LoraTrainer.builder().updater(new Sgd(0.1)).build(java.util.List.of()));
    }

    @Test
    void layersWithoutAnActiveAdapterAreSkipped() {
        LoraLinear l = layer(D, 150, 4, 4, 2);
        l.deleteAdapter("default");
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.1)).build(l);
        assertEquals(0.0, trainer.step());
        assertEquals(0, trainer.updaterStateSize());
    }

    private static void setGrads(LoraLinear l, INDArray ga, INDArray gb) {
        LoraAdapter ad = l.adapter(l.activeAdapter());
        ad.gradA().assign(ga);
        ad.gradB().assign(gb);
    }

    private static void assertClose(INDArray expected, INDArray actual, double tol, String what) {
        double[] e = expected.dup('c').castTo(D).data().asDouble();
        double[] a = actual.dup('c').castTo(D).data().asDouble();
        assertEquals(e.length, a.length, what + ": length");
        for (int i = 0; i < e.length; i++) {
            double diff = Math.abs(e[i] - a[i]);
            if (diff > tol * Math.max(1, Math.abs(e[i]))) {
                throw new AssertionError(what + ": element " + i + " expected " + e[i] + ", got " + a[i]
                        + " (|diff| " + diff + " > " + tol + ")");
            }
        }
    }
}
