package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.TestData;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * Issue 15 #7: {@link LoraTrainer#step()} checks the new values of A and B, not only the gradients. Each case used to
 * write NaN or infinity into A or B; now it is refused and every piece of state is bitwise as before.
 */
class NonFiniteStepRefusalTest {

    private static LoraLinear layer(DataType type, long seed, int in, int out, int r) {
        return TestData.trainedLayer(type, seed, in, out, LoraConfig.builder().rank(r).alpha(r).build(), true);
    }

    private static void setGrads(LoraLinear l, INDArray ga, INDArray gb) {
        LoraAdapter a = l.adapter(l.activeAdapter());
        a.gradA().assign(ga);
        a.gradB().assign(gb);
    }

    /** Everything a refused step must leave alone, per layer. */
    private record Snapshot(INDArray a, INDArray b, INDArray ga, INDArray gb, INDArray state) {
        static Snapshot of(LoraTrainer t, LoraLinear l) {
            LoraAdapter ad = l.adapter(l.activeAdapter());
            return new Snapshot(ad.a().dup(), ad.b().dup(), ad.gradA().dup(), ad.gradB().dup(),
                    t.updaterStateCopy(l, l.activeAdapter()));
        }

        void assertUnchanged(LoraTrainer t, LoraLinear l, String what) {
            LoraAdapter ad = l.adapter(l.activeAdapter());
            assertBitwiseEquals(a, ad.a(), what + ": A");
            assertBitwiseEquals(b, ad.b(), what + ": B");
            assertBitwiseEquals(ga, ad.gradA(), what + ": gradA");
            assertBitwiseEquals(gb, ad.gradB(), what + ": gradB");
            INDArray now = t.updaterStateCopy(l, l.activeAdapter());
            if (state == null) {
                assertNull(now, what + ": a stateless updater has no state");
            } else {
                assertBitwiseEquals(state, now, what + ": updater state");
            }
        }
    }

    private static IllegalStateException assertRefusedChangingNothing(LoraTrainer t, List<LoraLinear> layers,
                                                                      String what) {
        List<Snapshot> before = new ArrayList<>();
        for (LoraLinear l : layers) {
            before.add(Snapshot.of(t, l));
        }
        int iteration = t.iteration();
        IllegalStateException e = assertThrows(IllegalStateException.class, t::step, what);
        for (int i = 0; i < layers.size(); i++) {
            before.get(i).assertUnchanged(t, layers.get(i), what + ", layer " + i);
        }
        assertEquals(iteration, t.iteration(), what + ": iteration counter");
        assertTrue(e.getMessage().contains("non-finite") && e.getMessage().contains("unchanged"), e.getMessage());
        return e;
    }

    @Test
    void sgdWithNaNLearningRateIsRefusedAndChangesNothing() {
        LoraLinear l = layer(DataType.DOUBLE, 1, 6, 5, 2);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(Double.NaN)).build(l);
        setGrads(l, gaussian(DataType.DOUBLE, 2, 1, 2, 6), gaussian(DataType.DOUBLE, 3, 1, 5, 2));
        IllegalStateException e = assertRefusedChangingNothing(t, List.of(l), "Sgd(NaN)");
        assertTrue(e.getMessage().contains("layer 0") && e.getMessage().contains("adapter 'default'")
                && e.getMessage().contains("A[0, 0]"), e.getMessage());
    }

    @Test
    void adamWithZeroEpsilonOnAZeroGradientIsRefusedAndKeepsItsMoments() {
        LoraLinear l = layer(DataType.FLOAT, 4, 6, 5, 2);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2, 0.9, 0.999, 0.0)).build(l);
        // Zero gradients: m = v = 0, and Adam's step m / (sqrt(v) + 0) is 0 / 0.
        assertRefusedChangingNothing(t, List.of(l), "Adam(epsilon 0) on a zero gradient");
    }

    @Test
    void sgdWhoseStepOverflowsFloatIsRefusedAndChangesNothing() {
        LoraLinear l = layer(DataType.FLOAT, 5, 6, 5, 2);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(1e30)).build(l);
        // Finite gradients (1e9) whose step 1e39 is beyond FLOAT's 3.4e38.
        setGrads(l, gaussian(DataType.FLOAT, 6, 1e9, 2, 6), gaussian(DataType.FLOAT, 7, 1e9, 5, 2));
        IllegalStateException e = assertRefusedChangingNothing(t, List.of(l), "Sgd(1e30) on FLOAT");
        assertTrue(e.getMessage().contains("FLOAT"), e.getMessage());
    }

    @Test
    void aRefusalInALaterLayerRestoresTheUpdaterStateOfEveryLayer() {
        LoraLinear good = layer(DataType.DOUBLE, 10, 7, 4, 2);
        LoraLinear bad = layer(DataType.DOUBLE, 11, 5, 5, 3);
        LoraLinear twin = layer(DataType.DOUBLE, 10, 7, 4, 2);
        IUpdater nesterovs = new Nesterovs(1.0, 0.9);
        LoraTrainer t = LoraTrainer.builder().updater(nesterovs).build(good, bad);
        LoraTrainer twinTrainer = LoraTrainer.builder().updater(nesterovs).build(twin);
        // One good step for both, so the velocities are non-zero before the refused one.
        for (LoraLinear l : List.of(good, twin)) {
            setGrads(l, gaussian(DataType.DOUBLE, 12, 1, 2, 7), gaussian(DataType.DOUBLE, 13, 1, 4, 2));
        }
        setGrads(bad, gaussian(DataType.DOUBLE, 14, 1, 3, 5), gaussian(DataType.DOUBLE, 15, 1, 5, 3));
        t.step();
        twinTrainer.step();
        // A finite gradient whose Nesterov step, about 1.9 * 1e308, overflows DOUBLE.
        LoraAdapter b = bad.adapter("default");
        b.gradA().putScalar(1, 2, -1e308);
        for (LoraLinear l : List.of(good, twin)) {
            setGrads(l, gaussian(DataType.DOUBLE, 16, 1, 2, 7), gaussian(DataType.DOUBLE, 17, 1, 4, 2));
        }
        IllegalStateException e = assertRefusedChangingNothing(t, List.of(good, bad), "overflowing step");
        assertTrue(e.getMessage().contains("layer 1") && e.getMessage().contains("A[1, 2]"), e.getMessage());
        // The healthy layer's velocity was restored: with the bad gradient gone, the next step is the twin's.
        b.gradA().putScalar(1, 2, 0.0);
        t.step();
        twinTrainer.step();
        assertBitwiseEquals(twin.adapter("default").a(), good.adapter("default").a(), "A after the refused step");
        assertBitwiseEquals(twin.adapter("default").b(), good.adapter("default").b(), "B after the refused step");
        assertBitwiseEquals(twinTrainer.updaterStateCopy(twin, "default"), t.updaterStateCopy(good, "default"),
                "Nesterov velocity after the refused step");
    }
}
