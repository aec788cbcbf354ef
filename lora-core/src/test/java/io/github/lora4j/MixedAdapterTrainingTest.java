package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.train.LoraTrainer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.DoubleSupplier;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterTry;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * Several adapters trained in one batch (issue 28, item 3): {@code forward(x, adapterPerRow)} in training mode, then
 * {@code backward}, gives each adapter the gradients of its own rows only, and {@link LoraTrainer#step()} steps each
 * adapter that had rows, and only those, each with its own optimizer state and step count.
 *
 * <p><b>What "equal to training each adapter alone" means here, and its bound.</b> The reference trains, for every
 * adapter, a twin layer (same W, bias and adapter) with that adapter active, on that adapter's rows only, with its own
 * trainer, stepping only in the steps where the adapter had rows; the upstream gradient of each row is the same in
 * both. Each adapter's path then runs the very same products on the very same values in both (its rows are gathered
 * into one contiguous block, its dropout mask comes from its own stream), so its gradients, its Adam state and its
 * {@code A} and {@code B} after every step are <em>bitwise</em> the alone run's, on both kernel routes, in FLOAT and
 * DOUBLE. Only the shared products differ in shape (the base product and {@code dx = g W} run once over all rows
 * instead of once per adapter), so the outputs and input gradients differ by rounding, within the forward error bound
 * of dot products, elementwise {@code 2·γ_k·(|x||W|ᵀ + s/(1−p)·|x||A|ᵀ|B|ᵀ + |b|)} with {@code k = in + r + 2} for
 * {@code y}, and {@code 2·γ_k·(|g||W| + s/(1−p)·|g||B||A|)} with {@code k = out + r + 1} for {@code dx}
 * ({@code γ_k = k·ε / (1 − k·ε)}).
 */
class MixedAdapterTrainingTest {

    static final int IN = 20;
    static final int OUT = 16;
    static final String[] TRAINED = {"a0", "a1", "a2", "a3"};
    static final int[] RANKS = {2, 3, 4, 5};

    @AfterEach
    @AfterTry
    void defaults() {
        Kernels.forceFallback(false);
        MixedBatch.forced = null;
    }

    /** W, bias, an unused active "default" adapter and the trained adapters a0..a3, all from {@code seed}. */
    static LoraLinear layer(DataType type, long seed, double dropout) {
        LoraLinear l = LoraLinear.wrap(gaussian(type, seed, 0.4, OUT, IN), gaussian(type, seed + 1, 0.4, OUT),
                LoraConfig.builder().rank(2).seed(seed).build());
        for (int k = 0; k < TRAINED.length; k++) {
            l.addAdapter(TRAINED[k], LoraConfig.builder().rank(RANKS[k]).alpha(2.0 + k).dropout(dropout)
                    .seed(seed + 100 + k).build());
            l.setAdapterWeights(TRAINED[k], gaussian(type, seed + 10 * k + 2, 0.4, RANKS[k], IN),
                    gaussian(type, seed + 10 * k + 3, 0.4, OUT, RANKS[k]));
        }
        return l.train();
    }

    /** Names per row; step 0 uses only a0 and a1 (so a2, a3 start later: their own step counts lag). */
    static String[] names(int n, long seed, int step) {
        SplittableRandom rng = new SplittableRandom(seed);
        String[] pool = step == 0 ? new String[] {"a0", "a1", null, LoraLinear.BASE_MODEL}
                : new String[] {"a0", "a1", "a2", "a3", null, LoraLinear.BASE_MODEL};
        String[] per = new String[n];
        for (int i = 0; i < n; i++) {
            per[i] = pool[rng.nextInt(pool.length)];
        }
        return per;
    }

    static int[] rowsOf(String[] per, String name) {
        return java.util.stream.IntStream.range(0, per.length).filter(i -> name.equals(per[i])).toArray();
    }

    @Property(tries = 40)
    void trainingSeveralAdaptersInOneBatchEqualsTrainingEachAloneOnItsRows(
            @ForAll @IntRange(min = 1, max = 24) int n, @ForAll boolean doubles, @ForAll boolean fallback,
            @ForAll boolean dropout, @ForAll long seed) {
        DataType type = doubles ? DataType.DOUBLE : DataType.FLOAT;
        double p = dropout ? 0.25 : 0.0;
        Kernels.forceFallback(fallback);
        LoraLinear together = layer(type, seed, p);
        INDArray defaultA = together.adapter("default").a().dup();
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.05)).build(together);
        LoraLinear[] alone = new LoraLinear[TRAINED.length];
        LoraTrainer[] aloneTrainers = new LoraTrainer[TRAINED.length];
        for (int k = 0; k < TRAINED.length; k++) {
            alone[k] = layer(type, seed, p);
            alone[k].setActiveAdapter(TRAINED[k]);
            aloneTrainers[k] = LoraTrainer.builder().updater(new Adam(0.05)).build(alone[k]);
        }
        for (int step = 0; step < 4; step++) {
            String[] per = names(n, seed + step, step);
            INDArray x = gaussian(type, seed + 1000 + step, 1.0, n, IN);
            INDArray g = gaussian(type, seed + 2000 + step, 1.0, n, OUT);
            INDArray y = together.forward(x, per);
            INDArray dx = together.backward(g);
            trainer.step();
            for (int k = 0; k < TRAINED.length; k++) {
                int[] rows = rowsOf(per, TRAINED[k]);
                if (rows.length == 0) {
                    continue;
                }
                INDArray xa = Nd4j.pullRows(x, 1, rows);
                INDArray ya = alone[k].forward(xa);
                INDArray dxa = alone[k].backward(Nd4j.pullRows(g, 1, rows));
                aloneTrainers[k].step();
                LoraAdapter ad = alone[k].adapter(TRAINED[k]);
                double s = ad.scaling() / (1 - p);
                String what = TRAINED[k] + ", step " + step + ", " + type + (fallback ? ", ND4J route" : "");
                assertWithin(ya, Nd4j.pullRows(y, 1, rows), yBound(alone[k], xa, ad, s), what + ": output rows");
                assertWithin(dxa, Nd4j.pullRows(dx, 1, rows), dxBound(alone[k], Nd4j.pullRows(g, 1, rows), ad, s),
                        what + ": input gradient rows");
            }
            for (int k = 0; k < TRAINED.length; k++) {
                LoraAdapter mine = together.adapter(TRAINED[k]);
                LoraAdapter ref = alone[k].adapter(TRAINED[k]);
                assertBitwiseEquals(ref.a(), mine.a(), TRAINED[k] + " A after step " + step);
                assertBitwiseEquals(ref.b(), mine.b(), TRAINED[k] + " B after step " + step);
            }
        }
        assertBitwiseEquals(defaultA, together.adapter("default").a(), "the active adapter had no rows: never stepped");
    }

    /** {@code 2E} for the outputs {@code y = x Wᵀ + b + s·(x Aᵀ) Bᵀ} of adapter {@code ad} (see the class comment). */
    static INDArray yBound(LoraLinear l, INDArray x, LoraAdapter ad, double s) {
        INDArray ax = abs(x);
        INDArray e = ax.mmul(abs(l.weight()).transpose()).addiRowVector(abs(l.bias()))
                .addi(ax.mmul(abs(ad.a()).transpose()).mmul(abs(ad.b()).transpose()).muli(s));
        return e.muli(2 * gamma(IN + ad.rank() + 2, x.dataType()));
    }

    /** {@code 2E} for {@code dx = g W + s·(g B) A}. */
    static INDArray dxBound(LoraLinear l, INDArray g, LoraAdapter ad, double s) {
        INDArray ag = abs(g);
        INDArray e = ag.mmul(abs(l.weight())).addi(ag.mmul(abs(ad.b())).mmul(abs(ad.a())).muli(s));
        return e.muli(2 * gamma(OUT + ad.rank() + 1, g.dataType()));
    }

    private static INDArray abs(INDArray a) {
        return Transforms.abs(a.castTo(DataType.DOUBLE));
    }

    private static double gamma(int k, DataType type) {
        double u = type == DataType.FLOAT ? Math.ulp(1f) / 2 : Math.ulp(1.0) / 2;
        return k * u / (1 - k * u);
    }

    static void assertWithin(INDArray expected, INDArray actual, INDArray bound, String what) {
        INDArray diff = Transforms.abs(actual.castTo(DataType.DOUBLE).sub(expected.castTo(DataType.DOUBLE)));
        INDArray excess = diff.sub(bound);
        if (excess.maxNumber().doubleValue() > 0) {
            long at = excess.argMax().getLong(0);
            throw new AssertionError(what + ": element " + at + " differs by " + diff.getDouble(at)
                    + ", more than the rounding bound " + bound.getDouble(at));
        }
    }

    // ---------------------------------------------------------------- gradients against finite differences

    @Property(tries = 20)
    void mixedBatchGradientsMatchCentralDifferences(@ForAll @IntRange(min = 1, max = 8) int n, @ForAll long seed) {
        LoraLinear l = layer(DataType.DOUBLE, seed, 0.0);
        String[] per = names(n, seed, 1);
        INDArray x = gaussian(DataType.DOUBLE, seed + 4, 1, n, IN);
        INDArray c = gaussian(DataType.DOUBLE, seed + 5, 1, n, OUT);
        l.forward(x, per);
        INDArray dx = l.backward(c);                                   // L = Σ c ⊙ y, so dL/dy = c
        l.eval();
        DoubleSupplier loss = () -> l.forward(x, per).mul(c).sumNumber().doubleValue();
        for (String name : TRAINED) {
            LoraAdapter ad = l.adapter(name);
            boolean hasRows = rowsOf(per, name).length > 0;
            assertEquals(hasRows, l.adaptersWithGradients().contains(name), name + " has gradients iff it had rows");
            // Parameters change through the layer (as its contract asks), so a cached stacked A_cat is rebuilt.
            checkAgainstDifferences("dL/dA of " + name, ad.gradA().dup(), loss,
                    (i, v) -> l.updateTrainable(name, a -> a.a().reshape(a.a().length()).putScalar(i, v)),
                    i -> ad.a().reshape(ad.a().length()).getDouble(i));
            checkAgainstDifferences("dL/dB of " + name, ad.gradB().dup(), loss,
                    (i, v) -> l.updateTrainable(name, a -> a.b().reshape(a.b().length()).putScalar(i, v)),
                    i -> ad.b().reshape(ad.b().length()).getDouble(i));
        }
        INDArray xf = x.reshape(x.length());
        checkAgainstDifferences("dL/dx", dx, loss, xf::putScalar, xf::getDouble);
        assertEquals(0.0, l.adapter("default").gradA().amaxNumber().doubleValue(), "no rows, no gradient");
    }

    /** Sets element {@code i} of a parameter to {@code v}. */
    private interface Setter {
        void set(long i, double v);
    }

    /**
     * {@code analytic} against central differences of {@code loss}, element by element of the parameter that
     * {@code set} and {@code get} reach. L is linear in each of A, B and x, so the differences have no truncation
     * error; the tolerance is rounding.
     */
    private static void checkAgainstDifferences(String what, INDArray analytic, DoubleSupplier loss, Setter set,
                                                java.util.function.LongToDoubleFunction get) {
        double h = 1e-6;
        INDArray an = analytic.dup('c').reshape(analytic.length());
        for (long i = 0; i < an.length(); i++) {
            double v = get.applyAsDouble(i);
            set.set(i, v + h);
            double up = loss.getAsDouble();
            set.set(i, v - h);
            double down = loss.getAsDouble();
            set.set(i, v);
            double numeric = (up - down) / (2 * h);
            double err = Math.abs(numeric - an.getDouble(i)) / Math.max(1.0, Math.abs(numeric));
            assertTrue(err < 1e-7, what + "[" + i + "]: analytic " + an.getDouble(i) + ", numeric " + numeric);
        }
    }

    // ---------------------------------------------------------------- which adapters a step takes

    @Test
    void aBatchOfBaseRowsOnlyStepsNoAdapterNotEvenTheActiveOne() {
        LoraLinear l = layer(DataType.DOUBLE, 3, 0.0);
        l.setActiveAdapter("a0");
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.1)).build(l);
        INDArray x = gaussian(DataType.DOUBLE, 4, 1, 3, IN);
        l.forward(x, new String[] {"a0", "a0", null});
        l.backward(gaussian(DataType.DOUBLE, 5, 1, 3, OUT));
        trainer.step();                                 // a0 now has Adam moments: a zero-gradient step would move it
        INDArray a = l.adapter("a0").a().dup();
        l.forward(x, new String[] {null, LoraLinear.BASE_MODEL, null});
        l.backward(gaussian(DataType.DOUBLE, 6, 1, 3, OUT));
        assertEquals(List.of(), l.adaptersWithGradients());
        trainer.step();
        assertBitwiseEquals(a, l.adapter("a0").a(), "a0 had no rows in the second batch");
    }

    @Test
    void gradientsSetByHandAreStillAppliedToTheActiveAdapterWhenNoBackwardRan() {
        LoraLinear l = layer(DataType.DOUBLE, 7, 0.0);
        l.setActiveAdapter("a1");
        assertEquals(List.of("a1"), l.adaptersWithGradients());
        l.adapter("a1").gradA().assign(1.0);
        INDArray before = l.adapter("a1").a().dup();
        LoraTrainer.builder().updater(new org.nd4j.linalg.learning.config.Sgd(0.5)).build(l).step();
        assertEquals(before.sub(0.5).sumNumber().doubleValue(), l.adapter("a1").a().sumNumber().doubleValue(), 1e-12);
    }

    // ---------------------------------------------------------------- bad input, nothing half-changed

    @Test
    void anUnknownNameIsRefusedNamingTheRowAndLeavesThePendingForwardAndTheDropoutStreamsAsTheyWere() {
        LoraLinear l = layer(DataType.FLOAT, 11, 0.3);
        LoraLinear twin = layer(DataType.FLOAT, 11, 0.3);
        INDArray x = gaussian(DataType.FLOAT, 12, 1, 4, IN);
        INDArray g = gaussian(DataType.FLOAT, 13, 1, 4, OUT);
        String[] good = {"a0", "a1", null, "a0"};
        l.forward(x, good);
        twin.forward(x, good);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> l.forward(x, new String[] {"a0", "a1", "nope", "a2"}));
        assertTrue(e.getMessage().contains("adapterPerRow[2]: unknown adapter 'nope'")
                && e.getMessage().contains("a3"), e.getMessage());
        // The refused batch drew no masks and replaced no forward: the backward of the good batch still runs, and
        // everything equals the twin that never saw the refused call.
        assertBitwiseEquals(twin.backward(g), l.backward(g), "dx of the pending batch");
        for (String name : TRAINED) {
            assertBitwiseEquals(twin.adapter(name).gradA(), l.adapter(name).gradA(), name + " gradA");
        }
        assertBitwiseEquals(twin.forward(x, good), l.forward(x, good), "next batch: the same dropout masks");
    }

    @Test
    void deletingAnAdapterBetweenATrainingBatchAndItsBackwardRefusesTheBackwardAndChangesNoGradient() {
        LoraLinear l = layer(DataType.DOUBLE, 21, 0.0);
        INDArray x = gaussian(DataType.DOUBLE, 22, 1, 4, IN);
        INDArray g = gaussian(DataType.DOUBLE, 23, 1, 4, OUT);
        l.forward(x, new String[] {"a0", "a1", "a2", null});
        l.deleteAdapter("a3");                                  // not in the batch: the batch stays
        l.backward(g);
        assertEquals(List.of("a0", "a1", "a2"), l.adaptersWithGradients());
        l.zeroGrad();
        l.forward(x, new String[] {"a0", "a1", "a2", null});
        l.deleteAdapter("a1");                                  // in the batch: its backward cannot run
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> l.backward(g));
        assertTrue(e.getMessage().contains("adapter 'a1' was deleted"), e.getMessage());
        for (String name : List.of("a0", "a2")) {
            assertEquals(0.0, l.adapter(name).gradA().amaxNumber().doubleValue(), name + ": no half backward");
        }
        assertEquals(List.of(), l.adaptersWithGradients().stream().filter(n -> !n.equals("default")).toList());
        IllegalArgumentException gone = assertThrows(IllegalArgumentException.class,
                () -> l.forward(x, new String[] {"a0", "a1", null, null}));
        assertTrue(gone.getMessage().contains("unknown adapter 'a1'"), gone.getMessage());
    }

    /**
     * Inference batches on three threads while a fourth deletes an adapter they name: a batch holds the layer's shared
     * lock from start to end, the deletion its exclusive lock, so each batch either ran wholly before the deletion
     * (every row its full output) or starts after it (refused, naming the adapter). Bounded in work.
     */
    @Test
    void anAdapterDeletedWhileInferenceBatchesUseItIsSeenWhollyOrRefused() throws Exception {
        LoraLinear l = layer(DataType.DOUBLE, 31, 0.0).eval();
        INDArray x = gaussian(DataType.DOUBLE, 32, 1, 64, IN);
        String[] per = new String[64];
        for (int i = 0; i < per.length; i++) {
            per[i] = TRAINED[i % 4];
        }
        INDArray expected = l.forward(x, per);
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(3);
        java.util.concurrent.CountDownLatch started = new java.util.concurrent.CountDownLatch(3);
        List<java.util.concurrent.Future<int[]>> futures = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            futures.add(pool.submit(() -> {
                int[] outcome = new int[2];
                started.countDown();
                for (int i = 0; i < 200; i++) {
                    try {
                        INDArray y = l.forward(x, per);
                        assertTrue(TestData.normwiseRelativeError(y, expected) < 1e-13, "a whole batch");
                        outcome[0]++;
                    } catch (IllegalArgumentException e) {
                        assertTrue(e.getMessage().contains("unknown adapter 'a2'"), e.getMessage());
                        outcome[1]++;
                    }
                }
                return outcome;
            }));
        }
        started.await();
        l.deleteAdapter("a2");
        int refused = 0;
        for (java.util.concurrent.Future<int[]> f : futures) {
            refused += f.get(60, java.util.concurrent.TimeUnit.SECONDS)[1];
        }
        pool.shutdown();
        assertTrue(refused > 0, "batches after the deletion are refused");
        assertThrows(IllegalArgumentException.class, () -> l.forward(x, per));
    }

    @Test
    void anAdapterWhoseShapesDoNotFitIsRefusedAndTheBatchesStayAsTheyWere() {
        LoraLinear l = layer(DataType.FLOAT, 41, 0.0).eval();
        INDArray x = gaussian(DataType.FLOAT, 42, 1, 3, IN);
        String[] per = {"a0", "a3", null};
        INDArray before = l.forward(x, per);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.setAdapterWeights("a3",
                gaussian(DataType.FLOAT, 43, 1, 5, IN + 1), gaussian(DataType.FLOAT, 44, 1, OUT, 5)));
        assertTrue(e.getMessage().contains("A of adapter 'a3'"), e.getMessage());
        assertBitwiseEquals(before, l.forward(x, per), "the refused weights changed nothing");
        IllegalArgumentException wide = assertThrows(IllegalArgumentException.class,
                () -> l.forward(gaussian(DataType.FLOAT, 45, 1, 3, IN + 2), per));
        assertTrue(wide.getMessage().contains(String.valueOf(IN)), wide.getMessage());
    }

    // ---------------------------------------------------------------- saving and resuming

    @Test
    void aResumedMixedRunContinuesBitForBitWithEachAdaptersOwnStepCount(@org.junit.jupiter.api.io.TempDir
                                                                        java.nio.file.Path dir) throws Exception {
        LoraLinear l = layer(DataType.DOUBLE, 51, 0.0);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.05)).build(l);
        for (int step = 0; step < 2; step++) {
            mixedStep(l, trainer, step);                      // step 0: a2, a3 have no rows
        }
        trainer.saveState(dir);
        String json = java.nio.file.Files.readString(dir.resolve(LoraTrainer.STATE_CONFIG_FILE));
        assertTrue(json.contains("\"adapter_steps\""), json);
        LoraLinear resumed = layer(DataType.DOUBLE, 51, 0.0);
        for (String name : TRAINED) {
            resumed.setAdapterWeights(name, l.adapter(name).a(), l.adapter(name).b());
        }
        LoraTrainer again = LoraTrainer.loadState(dir, List.of(resumed));
        for (int step = 2; step < 4; step++) {
            mixedStep(l, trainer, step);
            mixedStep(resumed, again, step);
        }
        for (String name : TRAINED) {
            assertBitwiseEquals(l.adapter(name).a(), resumed.adapter(name).a(), name + " A");
            assertBitwiseEquals(l.adapter(name).b(), resumed.adapter(name).b(), name + " B");
        }
        // Without the per-adapter counts a resume would give a2 and a3 the trainer's iteration: a different run.
        java.nio.file.Files.writeString(dir.resolve(LoraTrainer.STATE_CONFIG_FILE),
                json.replaceFirst("\"steps\"\\s*:\\s*[0-9]+", "\"steps\" : 3"));
        io.github.lora4j.io.AdapterFormatException bad = assertThrows(io.github.lora4j.io.AdapterFormatException.class,
                () -> LoraTrainer.loadState(dir, List.of(layer(DataType.DOUBLE, 51, 0.0))));
        assertTrue(bad.getMessage().contains("at most the trainer's iteration 2"), bad.getMessage());
    }

    private static void mixedStep(LoraLinear l, LoraTrainer trainer, int step) {
        String[] per = names(6, 60 + step, step);
        l.forward(gaussian(DataType.DOUBLE, 70 + step, 1, 6, IN), per);
        l.backward(gaussian(DataType.DOUBLE, 80 + step, 1, 6, OUT));
        trainer.step();
    }

    @Test
    void aStateFileWithoutStepCountsResumesEveryAdapterAtTheTrainersIteration(@org.junit.jupiter.api.io.TempDir
                                                                              java.nio.file.Path dir) throws Exception {
        LoraLinear l = layer(DataType.DOUBLE, 91, 0.0);
        l.setActiveAdapter("a0");
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(0.05)).build(l);
        INDArray x = gaussian(DataType.DOUBLE, 92, 1, 3, IN);
        for (int i = 0; i < 3; i++) {
            l.forward(x);
            l.backward(gaussian(DataType.DOUBLE, 93 + i, 1, 3, OUT));
            trainer.step();
        }
        trainer.saveState(dir);
        java.nio.file.Path json = dir.resolve(LoraTrainer.STATE_CONFIG_FILE);
        String text = java.nio.file.Files.readString(json);
        String legacy = text.replaceFirst("(?s),\\s*\"adapter_steps\"\\s*:\\s*\\[.*?\\]", "");
        assertTrue(!legacy.contains("adapter_steps") && legacy.length() < text.length(), legacy);
        java.nio.file.Files.writeString(json, legacy);
        LoraLinear fresh = layer(DataType.DOUBLE, 91, 0.0);
        fresh.setActiveAdapter("a0");
        fresh.setAdapterWeights("a0", l.adapter("a0").a(), l.adapter("a0").b());
        LoraTrainer resumed = LoraTrainer.loadState(dir, List.of(fresh));
        l.forward(x);
        l.backward(gaussian(DataType.DOUBLE, 99, 1, 3, OUT));
        trainer.step();
        fresh.forward(x);
        fresh.backward(gaussian(DataType.DOUBLE, 99, 1, 3, OUT));
        resumed.step();
        assertBitwiseEquals(l.adapter("a0").a(), fresh.adapter("a0").a(), "a file of the previous format resumes");
    }
}
