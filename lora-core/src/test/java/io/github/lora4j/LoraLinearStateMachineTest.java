package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.train.LoraTrainer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;
import java.util.function.Supplier;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;
import net.jqwik.api.state.Action;
import net.jqwik.api.state.ActionChain;
import net.jqwik.api.state.Transformer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * Model-based state machine over {@link LoraLinear}'s public API (issue 15, "keep the attacks as tests"): random
 * sequences of adapter edits, mode switches, forward/backward, merges and trainer steps run against the real layer
 * and an independent reference of its state, held in plain Java {@code double} arrays. After every call the
 * reference predicts whether the call must be refused (and with which exception type), what forward and backward
 * return, the gradients, every adapter's A and B, and {@code W}:
 * <ul>
 *   <li>nothing merged and no FAST merge ever undone: {@code W} bitwise the original;</li>
 *   <li>after a FAST merge was undone: {@code W} within a few ulps of the original (FAST unmerge subtracts);</li>
 *   <li>after an EXACT unmerge: {@code W} bitwise what it was before that merge;</li>
 *   <li>merged: {@code W ≈ W₀ + s·B·A}.</li>
 * </ul>
 * A refused call must leave everything as it was. The forward cache is modelled as the layer documents it: a training
 * forward (single-adapter or a mixed-adapter batch) keeps what the next backward needs; eval, merge, unmerge, adapter
 * switches, enable/disable drop it, and so do deleting an adapter it ran (or the active one), new weights for an
 * adapter it ran, a trainer step of an adapter it ran, and an empty training batch. The trainer steps exactly the
 * adapters a backward gave gradients since they were last cleared (every adapter with rows in a mixed batch, none
 * after base rows only), or the active adapter while no backward has run since.
 *
 * <p>Adapters are plain LoRA or DoRA (issue 30): a DoRA adapter's magnitude {@code m}, its gradient and its step are
 * modelled too, its forward as {@code (m / ‖W₀ + s·B·A‖_row) ⊙ (x (W₀ + s·B·A)^T) + b} recomputed from the model's
 * values after every change (so a stale norm inside the layer shows), and its merge as
 * {@code W = (m / ‖W₀ + s·B·A‖_row) ⊙ (W₀ + s·B·A)}, always EXACT.
 *
 * <p>The layer is DOUBLE, 4 × 5, with a bias; dropout is 0, so outputs are deterministic. Values the model does not
 * predict (the initial A of a new adapter, a function of the seed) are read back once and then owned by the model;
 * values it computes in another summation order are compared within a tolerance and then taken over from the layer,
 * so rounding differences do not compound along a sequence.
 */
class LoraLinearStateMachineTest {

    private static final int IN = 5;
    private static final int OUT = 4;
    private static final double LR = 0.05;
    private static final double TOL = 1e-9;
    private static final List<String> NAMES = List.of("default", "a", "b");

    @Property(tries = 200)
    void randomCallSequencesMatchTheReferenceModel(@ForAll("chains") ActionChain<Harness> chain) {
        chain.run();
    }

    /** The same sequences on a layer whose first adapter is DoRA, so DoRA's path runs from the first call. */
    @Property(tries = 100)
    void randomCallSequencesFromADoraAdapterMatchTheReferenceModel(@ForAll("doraChains") ActionChain<Harness> chain) {
        chain.run();
    }

    @Provide
    Arbitrary<ActionChain<Harness>> chains() {
        return chains(false);
    }

    @Provide
    Arbitrary<ActionChain<Harness>> doraChains() {
        return chains(true);
    }

    private static Arbitrary<ActionChain<Harness>> chains(boolean doraFirst) {
        Arbitrary<Long> seeds = Arbitraries.longs();
        return ActionChain.startWith(() -> new Harness(doraFirst))
                .withAction(3, action(Combinators.combine(name(), Arbitraries.integers().between(1, 5),
                        Arbitraries.of(1.0, 2.0, 8.0), Arbitraries.of(false, true), seeds, Arbitraries.of(false, true))
                        .as((n, r, alpha, rs, seed, dora) -> call("addAdapter(" + n + ", r=" + r + ", alpha=" + alpha
                                + ", rsLora=" + rs + ", seed=" + seed + (dora ? ", DoRA" : "") + ")",
                                h -> h.addAdapter(n, r, alpha, rs, seed, dora)))))
                .withAction(3, action(name().map(n -> call("setActiveAdapter(" + n + ")", h -> h.setActive(n)))))
                .withAction(1, action(name().map(n -> call("deleteAdapter(" + n + ")", h -> h.delete(n)))))
                .withAction(3, action(Combinators.combine(name(), seeds, Arbitraries.integers().between(0, 9))
                        .as((n, seed, kind) -> call("setAdapterWeights(" + n + ", seed=" + seed + ", "
                                + (kind == 0 ? "A of a wrong shape" : kind == 1 ? "NaN in B" : kind == 2
                                ? "valid, with a magnitude" : "valid") + ")",
                                h -> h.setWeights(n, seed, kind)))))
                .withAction(1, action(Arbitraries.just(call("disableAdapters()", Harness::disable))))
                .withAction(1, action(Arbitraries.just(call("enableAdapters()", Harness::enable))))
                .withAction(2, action(Arbitraries.just(call("train()", Harness::train))))
                .withAction(1, action(Arbitraries.just(call("eval()", Harness::eval))))
                .withAction(6, action(Combinators.combine(Arbitraries.integers().between(0, 3), seeds)
                        .as((n, seed) -> call("forward(" + n + " rows, seed=" + seed + ")", h -> h.forward(n, seed)))))
                .withAction(4, action(Combinators.combine(rowNames().list().ofMinSize(0).ofMaxSize(4), seeds)
                        .as((per, seed) -> call("forward(" + per.size() + " rows, " + per + ", seed=" + seed + ")",
                                h -> h.forwardMixed(per.toArray(new String[0]), seed)))))
                .withAction(5, action(Combinators.combine(seeds, Arbitraries.integers().between(0, 9))
                        .as((seed, kind) -> call("backward(seed=" + seed + (kind == 0 ? ", wrong shape" : "") + ")",
                                h -> h.backward(seed, kind)))))
                .withAction(2, action(Arbitraries.of(MergeMode.values())
                        .map(m -> call("merge(" + m + ")", h -> h.merge(m)))))
                .withAction(2, action(Arbitraries.just(call("unmerge()", Harness::unmerge))))
                .withAction(3, action(Arbitraries.just(call("trainer.step()", Harness::step))))
                .withAction(1, action(Arbitraries.just(call("zeroGrad()", Harness::zeroGrad))))
                .withMaxTransformations(40);
    }

    private static Arbitrary<String> name() {
        return Arbitraries.frequencyOf(
                Tuple.of(12, Arbitraries.of(NAMES)),
                Tuple.of(1, Arbitraries.of(LoraLinear.BASE_MODEL, " ", "missing")));
    }

    /** A row's adapter in a mixed batch: an adapter name (maybe unknown), null or the base-model name. */
    private static Arbitrary<String> rowNames() {
        return Arbitraries.frequencyOf(
                Tuple.of(8, Arbitraries.of(NAMES)),
                Tuple.of(2, Arbitraries.of(LoraLinear.BASE_MODEL)),
                Tuple.of(2, Arbitraries.just((String) null)),
                Tuple.of(1, Arbitraries.of("missing")));
    }

    private static Action.Independent<Harness> action(Arbitrary<Transformer<Harness>> calls) {
        return () -> calls;
    }

    /** A call on the harness, described with its arguments for jqwik's report of a failing sequence. */
    private static Transformer<Harness> call(String description, Consumer<Harness> call) {
        return Transformer.mutate(description, call);
    }

    // ---------------------------------------------------------------- the reference model

    /** What the model knows about one adapter. */
    private static final class RefAdapter {
        final int r;
        final double s;
        double[][] a;
        double[][] b;
        double[][] ga;
        double[][] gb;
        /** DoRA's magnitude {@code [1][OUT]} and its gradient, or null for plain LoRA. */
        double[][] m;
        double[][] gm;

        RefAdapter(int r, double s, double[][] a, double[][] b) {
            this.r = r;
            this.s = s;
            this.a = a;
            this.b = b;
            this.ga = new double[r][IN];
            this.gb = new double[OUT][r];
        }

        /** {@code ‖W₀_j + s(BA)_j‖} over the model's W₀. */
        double[] norms(double[][] w0) {
            double[][] v = copy(w0);
            add(v, times(b, a), s);
            double[] n = new double[OUT];
            for (int j = 0; j < OUT; j++) {
                double sum = 0;
                for (double e : v[j]) {
                    sum += e * e;
                }
                n[j] = Math.sqrt(sum);
            }
            return n;
        }

        /** DoRA's {@code c_j = m_j / ‖W₀_j + s(BA)_j‖} over the model's W₀. */
        double[] factors(double[][] w0) {
            double[] c = norms(w0);
            for (int j = 0; j < OUT; j++) {
                c[j] = m[0][j] / c[j];
            }
            return c;
        }
    }

    /**
     * The cached training forward: its input, the adapter whose path each row ran (null: base only, e.g. merged), and
     * whether it was a mixed-adapter batch.
     */
    private record RefCache(double[][] x, String[] rowAdapters, boolean merged, boolean mixed) {

        boolean ran(String name) {
            return Arrays.asList(rowAdapters).contains(name);
        }
    }

    /** The real layer, its trainer, and the reference model of both. */
    static final class Harness {
        final LoraLinear layer;
        final LoraTrainer trainer;
        final double[][] w0;
        final long[] w0Bits;
        final double[] bias;
        final long[] biasBits;
        final Map<String, RefAdapter> adapters = new LinkedHashMap<>();
        String active = LoraLinear.DEFAULT_ADAPTER;
        boolean enabled = true;
        boolean training;
        String merged;
        MergeMode mergedMode;
        long[] wBeforeMerge;
        /** Whether a FAST merge has been undone: W may then be a few ulps off the original. */
        boolean drifted;
        RefCache cache;
        int iteration;
        /** Adapters a backward gave gradients since they were last cleared. */
        final Set<String> withGradients = new HashSet<>();
        /** Whether a backward ran since the gradients were last cleared (a base-only mixed batch counts). */
        boolean backwardRan;

        Harness(boolean dora) {
            INDArray w = TestData.gaussian(DataType.DOUBLE, 1, 0.5, OUT, IN);
            INDArray b = TestData.gaussian(DataType.DOUBLE, 2, 0.5, OUT);
            layer = LoraLinear.wrap(w, b, LoraConfig.builder().rank(2).alpha(4).useDora(dora).build());
            trainer = LoraTrainer.builder().updater(new Sgd(LR)).build(layer);
            w0 = matrix(w);
            w0Bits = TestData.bits(w);
            bias = b.toDoubleVector();
            biasBits = TestData.bits(b);
            RefAdapter first = new RefAdapter(2, 2.0, readBack("default", 2), new double[OUT][2]);
            if (dora) {
                first.m = matrix(layer.adapter("default").magnitude().reshape(1, OUT));
                first.gm = new double[1][OUT];
            }
            adapters.put(LoraLinear.DEFAULT_ADAPTER, first);
        }

        // ------------------------------------------------------------ actions

        void addAdapter(String name, int r, double alpha, boolean rs, long seed, boolean dora) {
            LoraConfig cfg = LoraConfig.builder().rank(r).alpha(alpha).rsLora(rs).seed(seed).useDora(dora).build();
            boolean badArgument = name.isBlank() || name.equals(LoraLinear.BASE_MODEL);   // any r >= 1, as PEFT
            boolean taken = adapters.containsKey(name);
            boolean mergedRefusal = dora && merged != null;   // DoRA's magnitude starts from the unmerged W
            Class<? extends RuntimeException> refusal = badArgument || (taken && !mergedRefusal)
                    ? IllegalArgumentException.class : mergedRefusal ? IllegalStateException.class : null;
            expect(refusal, taken && mergedRefusal, () -> layer.addAdapter(name, cfg));
            if (refusal == null) {
                double s = rs ? alpha / Math.sqrt(r) : alpha / r;
                RefAdapter ad = new RefAdapter(r, s, readBack(name, r), new double[OUT][r]);
                if (dora) {
                    ad.m = new double[1][OUT];                  // PEFT's start: the row norms of W (B = 0)
                    for (int j = 0; j < OUT; j++) {
                        double sum = 0;
                        for (double e : w0[j]) {
                            sum += e * e;
                        }
                        ad.m[0][j] = Math.sqrt(sum);
                    }
                    ad.gm = new double[1][OUT];
                }
                adapters.put(name, ad);
            }
            check();
        }

        void setActive(String name) {
            Class<? extends RuntimeException> refusal = !adapters.containsKey(name) ? IllegalArgumentException.class
                    : merged != null && !merged.equals(name) ? IllegalStateException.class : null;
            expect(refusal, () -> layer.setActiveAdapter(name));
            if (refusal == null) {
                if (!name.equals(active)) {
                    cache = null;
                }
                active = name;
            }
            check();
        }

        void delete(String name) {
            Class<? extends RuntimeException> refusal = !adapters.containsKey(name) ? IllegalArgumentException.class
                    : name.equals(merged) ? IllegalStateException.class : null;
            expect(refusal, () -> layer.deleteAdapter(name));
            if (refusal == null) {
                adapters.remove(name);
                if (name.equals(active) || cache != null && cache.ran(name)) {
                    cache = null;
                }
                if (name.equals(active)) {
                    active = null;
                }
                withGradients.remove(name);
                backwardRan = !withGradients.isEmpty();
            }
            check();
        }

        /**
         * kind 0: wrong shape of A; 1: NaN in B; 2: valid random A and B with a random magnitude (refused for plain
         * LoRA); otherwise valid random A and B.
         */
        void setWeights(String name, long seed, int kind) {
            RefAdapter ad = adapters.get(name);
            int r = ad == null ? 2 : ad.r;
            double[][] a = random(seed, r, IN, 0.5);
            double[][] b = random(seed + 1, OUT, r, 0.5);
            double[][] m = random(seed + 2, 1, OUT, 0.5);
            for (int j = 0; j < OUT; j++) {
                m[0][j] += 1.5;
            }
            INDArray aArr = kind == 0 ? Nd4j.create(DataType.DOUBLE, r + 1, IN) : array(a);
            INDArray bArr = array(b);
            if (kind == 1) {
                bArr.putScalar(0, 0, Double.NaN);
            }
            boolean withMagnitude = kind == 2;
            Class<? extends RuntimeException> refusal;
            if (ad == null || kind <= 1 || (withMagnitude && ad.m == null)) {
                refusal = IllegalArgumentException.class;
            } else {
                refusal = name.equals(merged) ? IllegalStateException.class : null;
            }
            boolean eitherWay = ad != null && (kind <= 1 || (withMagnitude && ad.m == null)) && name.equals(merged);
            expect(refusal, eitherWay, () -> {
                if (withMagnitude) {
                    layer.setAdapterWeights(name, aArr, bArr, array(m).reshape(OUT));
                } else {
                    layer.setAdapterWeights(name, aArr, bArr);
                }
            });
            if (refusal == null) {
                ad.a = a;
                ad.b = b;
                if (withMagnitude) {
                    ad.m = m;
                }
                if (cache != null && cache.ran(name)) {
                    cache = null;
                }
            }
            check();
        }

        void disable() {
            Class<? extends RuntimeException> refusal = merged != null ? IllegalStateException.class : null;
            expect(refusal, layer::disableAdapters);
            if (refusal == null) {
                enabled = false;
                cache = null;
            }
            check();
        }

        void enable() {
            layer.enableAdapters();
            enabled = true;
            cache = null;
            check();
        }

        void train() {
            layer.train();
            training = true;
            check();
        }

        void eval() {
            layer.eval();
            training = false;
            cache = null;
            check();
        }

        void forward(int n, long seed) {
            double[][] x = random(seed, n, IN, 1.0);
            INDArray y = layer.forward(n == 0 ? Nd4j.create(DataType.DOUBLE, 0, IN) : array(x));
            assertArrayEquals(new long[] {n, OUT}, y.shape(), "forward output shape");
            double[][] expected = new double[n][OUT];
            double[][] wEff = effectiveWeight();
            String path = merged == null && enabled && active != null ? active : null;
            for (int i = 0; i < n; i++) {
                for (int o = 0; o < OUT; o++) {
                    double v = bias[o];
                    for (int k = 0; k < IN; k++) {
                        v += x[i][k] * wEff[o][k];
                    }
                    expected[i][o] = v;
                }
            }
            if (path != null) {
                RefAdapter ad = adapters.get(path);
                double[][] u = times(x, transpose(ad.a));              // u = x A^T   [n, r]
                double[][] d = times(u, transpose(ad.b));              // u B^T       [n, out]
                double[] c = ad.m == null ? null : ad.factors(w0);     // DoRA: m / ‖W0 + sBA‖
                for (int i = 0; i < n; i++) {
                    for (int o = 0; o < OUT; o++) {
                        expected[i][o] += ad.s * d[i][o];
                        if (c != null) {
                            expected[i][o] = c[o] * (expected[i][o] - bias[o]) + bias[o];
                        }
                    }
                }
            }
            assertClose(expected, matrix(y), "forward output (" + describeState() + ")");
            if (training) {
                String[] rows = new String[n];
                Arrays.fill(rows, path);
                cache = n == 0 ? null : new RefCache(x, rows, merged != null, false);
            }
            check();
        }

        /** A mixed-adapter batch: row i through adapter per[i] (null or the base-model name: the base layer). */
        void forwardMixed(String[] per, long seed) {
            int n = per.length;
            double[][] x = random(seed, n, IN, 1.0);
            boolean unknown = false;
            for (String name : per) {
                unknown |= name != null && !name.equals(LoraLinear.BASE_MODEL) && !adapters.containsKey(name);
            }
            boolean doraRow = false;   // Checks.refuseDoraRows: mixed batches refuse DoRA adapters, as PEFT does
            for (String name : per) {
                doraRow |= name != null && adapters.containsKey(name) && adapters.get(name).m != null;
            }
            Class<? extends RuntimeException> refusal = merged != null ? IllegalStateException.class
                    : unknown || doraRow ? IllegalArgumentException.class : null;
            INDArray xArr = n == 0 ? Nd4j.create(DataType.DOUBLE, 0, IN) : array(x);
            INDArray y = expect(refusal, merged != null && (unknown || doraRow), () -> layer.forward(xArr, per));
            if (refusal == null) {
                assertArrayEquals(new long[] {n, OUT}, y.shape(), "mixed forward output shape");
                String[] rows = new String[n];
                double[][] expected = new double[n][OUT];
                for (int i = 0; i < n; i++) {
                    boolean base = per[i] == null || per[i].equals(LoraLinear.BASE_MODEL) || !enabled;
                    rows[i] = base ? null : per[i];
                    for (int o = 0; o < OUT; o++) {
                        double v = bias[o];
                        for (int k = 0; k < IN; k++) {
                            v += x[i][k] * w0[o][k];
                        }
                        expected[i][o] = v;
                    }
                    if (!base) {
                        RefAdapter ad = adapters.get(per[i]);
                        double[][] d = times(times(new double[][] {x[i]}, transpose(ad.a)), transpose(ad.b));
                        add(new double[][] {expected[i]}, d, ad.s);
                    }
                }
                assertClose(expected, matrix(y), "mixed forward output (" + describeState() + ")");
                if (training) {
                    cache = n == 0 ? null : new RefCache(x, rows, false, true);
                }
            }
            check();
        }

        /** kind 0: a gradient of the wrong shape; otherwise the shape of the cached forward's output. */
        void backward(long seed, int kind) {
            int n = cache == null ? 1 : cache.x().length;
            double[][] g = random(seed, kind == 0 ? n + 1 : n, OUT, 1.0);
            INDArray gArr = g.length == 0 ? Nd4j.create(DataType.DOUBLE, 0, OUT) : array(g);
            boolean stateRefusal = merged != null || cache == null;
            Class<? extends RuntimeException> refusal = stateRefusal ? IllegalStateException.class
                    : kind == 0 ? IllegalArgumentException.class : null;
            INDArray dx = expect(refusal, kind == 0 && stateRefusal, () -> layer.backward(gArr));
            if (refusal == null) {
                double[][] x = cache.x();
                String single = cache.mixed() ? null : cache.rowAdapters()[0];
                RefAdapter dora = single == null ? null : adapters.get(single);
                if (dora != null && dora.m != null) {
                    // DoRA: gc = g ⊙ c, dm += Σ g ⊙ q / ‖·‖ with q = x (W0 + sBA)^T, then LoRA's rules on gc.
                    double[] c = dora.factors(w0);
                    double[] norms = dora.norms(w0);
                    double[][] v = copy(w0);
                    add(v, times(dora.b, dora.a), dora.s);
                    double[][] q = times(x, transpose(v));
                    for (int i = 0; i < g.length; i++) {
                        for (int o = 0; o < OUT; o++) {
                            dora.gm[0][o] += g[i][o] * q[i][o] / norms[o];
                            g[i][o] *= c[o];
                        }
                    }
                }
                double[][] expectedDx = times(g, w0);                  // dx = g W
                for (int i = 0; i < n; i++) {
                    String name = cache.rowAdapters()[i];
                    if (name == null) {
                        continue;
                    }
                    RefAdapter ad = adapters.get(name);
                    double[][] xi = {x[i]};
                    double[][] gi = {g[i]};
                    double[][] gB = times(gi, ad.b);                    // gB = g B          [1, r]
                    double[][] u = times(xi, transpose(ad.a));          // u = x A^T         [1, r]
                    add(ad.gb, times(transpose(gi), u), ad.s);          // dB += s g^T u     (its own rows only)
                    add(ad.ga, times(transpose(gB), xi), ad.s);         // dA += s gB^T x
                    double[][] dxi = {expectedDx[i]};
                    add(dxi, times(gB, ad.a), ad.s);                    // dx += s gB A
                    withGradients.add(name);
                }
                if (cache.mixed() || Arrays.stream(cache.rowAdapters()).anyMatch(Objects::nonNull)) {
                    backwardRan = true;
                }
                assertClose(expectedDx, matrix(dx), "backward dx");
                cache = null;
            }
            check();
        }

        void merge(MergeMode mode) {
            Class<? extends RuntimeException> refusal = merged != null || !enabled || active == null
                    ? IllegalStateException.class : null;
            long[] before = TestData.bits(layer.weight());
            expect(refusal, () -> layer.merge(mode));
            if (refusal == null) {
                merged = active;
                mergedMode = adapters.get(active).m != null ? MergeMode.EXACT : mode;   // DoRA merges exactly
                wBeforeMerge = before;
                cache = null;
            }
            check();
        }

        void unmerge() {
            Class<? extends RuntimeException> refusal = merged == null ? IllegalStateException.class : null;
            expect(refusal, layer::unmerge);
            if (refusal == null) {
                if (mergedMode == MergeMode.EXACT) {
                    assertArrayEquals(wBeforeMerge, TestData.bits(layer.weight()),
                            "an EXACT unmerge restores W bitwise to what it was before the merge");
                } else {
                    drifted = true;
                }
                merged = null;
                mergedMode = null;
                cache = null;
            }
            check();
        }

        void step() {
            Class<? extends RuntimeException> refusal = merged != null ? IllegalStateException.class : null;
            expect(refusal, () -> trainer.step());
            if (refusal == null) {
                List<String> stepped = new ArrayList<>();
                if (enabled) {
                    for (String name : adapters.keySet()) {
                        if (withGradients.contains(name)) {
                            stepped.add(name);
                        }
                    }
                    if (!backwardRan && active != null) {
                        stepped.add(active);                            // gradients set by hand
                    }
                }
                for (String name : stepped) {
                    RefAdapter ad = adapters.get(name);
                    add(ad.a, ad.ga, -LR);                              // A -= lr·dA
                    add(ad.b, ad.gb, -LR);                              // B -= lr·dB
                    ad.ga = new double[ad.r][IN];
                    ad.gb = new double[OUT][ad.r];
                    if (ad.m != null) {
                        add(ad.m, ad.gm, -LR);                          // m -= lr·dm
                        ad.gm = new double[1][OUT];
                    }
                    withGradients.remove(name);
                    backwardRan = !withGradients.isEmpty();
                    if (cache != null && cache.ran(name)) {
                        cache = null;
                    }
                }
                iteration++;
            }
            assertEquals(iteration, trainer.iteration(), "trainer iteration");
            check();
        }

        void zeroGrad() {
            layer.zeroGrad();
            for (RefAdapter ad : adapters.values()) {
                ad.ga = new double[ad.r][IN];
                ad.gb = new double[OUT][ad.r];
                if (ad.m != null) {
                    ad.gm = new double[1][OUT];
                }
            }
            withGradients.clear();
            backwardRan = false;
            check();
        }

        // ------------------------------------------------------------ checks

        /** Everything observable against the model; then the model adopts the layer's rounding of A, B, gradients. */
        void check() {
            assertEquals(new ArrayList<>(adapters.keySet()), layer.adapterNames(), "adapter names");
            assertEquals(active, layer.activeAdapter(), "active adapter");
            assertEquals(enabled, layer.adaptersEnabled(), "adapters enabled");
            assertEquals(training, layer.isTraining(), "training mode");
            assertEquals(merged != null, layer.isMerged(), "merged");
            assertEquals(mergedMode, layer.mergeMode(), "merge mode");
            assertArrayEquals(biasBits, TestData.bits(layer.bias().reshape(OUT)), "bias is never written");
            for (Map.Entry<String, RefAdapter> e : adapters.entrySet()) {
                RefAdapter ad = e.getValue();
                LoraAdapter real = layer.adapter(e.getKey());
                String what = "adapter '" + e.getKey() + "' ";
                ad.a = adopt(ad.a, real.a(), what + "A");
                ad.b = adopt(ad.b, real.b(), what + "B");
                ad.ga = adopt(ad.ga, real.gradA(), what + "gradA");
                ad.gb = adopt(ad.gb, real.gradB(), what + "gradB");
                assertEquals(ad.m != null, real.isDora(), what + "is DoRA");
                if (ad.m != null) {
                    ad.m = adopt(ad.m, real.magnitude().reshape(1, OUT), what + "magnitude");
                    ad.gm = adopt(ad.gm, real.gradMagnitude().reshape(1, OUT), what + "gradMagnitude");
                }
                assertEquals(ad.s, real.scaling(), 0.0, what + "scaling");
            }
            long[] w = TestData.bits(layer.weight());
            if (merged != null) {
                assertClose(effectiveWeight(), matrix(layer.weight()), "merged W = W0 + s·B·A");
            } else if (!drifted) {
                assertArrayEquals(w0Bits, w, "W bitwise the original while nothing is merged ("
                        + describeState() + ")");
            } else {
                assertClose(w0, matrix(layer.weight()), "W after a FAST merge was undone (a few ulps allowed)");
            }
        }

        /** W as forward uses it: W0 + s·B·A of the merged adapter, or W0. */
        private double[][] effectiveWeight() {
            double[][] w = copy(w0);
            if (merged != null) {
                RefAdapter ad = adapters.get(merged);
                double[] c = ad.m == null ? null : ad.factors(w0);
                add(w, times(ad.b, ad.a), ad.s);
                for (int j = 0; c != null && j < OUT; j++) {
                    for (int k = 0; k < IN; k++) {
                        w[j][k] *= c[j];                                // DoRA: (m / ‖W0 + sBA‖) ⊙ (W0 + sBA)
                    }
                }
            }
            return w;
        }

        private double[][] readBack(String name, int r) {
            LoraAdapter ad = layer.adapter(name);
            assertArrayEquals(new long[] {r, IN}, ad.a().shape(), "A of a new adapter");
            double[][] a = matrix(ad.a());
            double bound = 1 / Math.sqrt(IN);
            for (double[] row : a) {
                for (double v : row) {
                    assertTrue(Math.abs(v) <= bound, "kaiming-uniform A within ±1/sqrt(in), got " + v);
                }
            }
            assertEquals(0.0, ad.b().amaxNumber().doubleValue(), 0.0, "B of a new adapter is zero");
            return a;
        }

        private String describeState() {
            return "active=" + active + ", enabled=" + enabled + ", merged=" + merged + ", training=" + training
                    + ", cache=" + (cache == null ? "none" : Arrays.toString(cache.rowAdapters()) + (cache.mixed()
                    ? " (mixed)" : "")) + ", withGradients=" + withGradients + ", backwardRan=" + backwardRan;
        }

        private void expect(Class<? extends RuntimeException> refusal, Runnable call) {
            expect(refusal, false, () -> {
                call.run();
                return null;
            });
        }

        private void expect(Class<? extends RuntimeException> refusal, boolean eitherRefusal, Runnable call) {
            expect(refusal, eitherRefusal, () -> {
                call.run();
                return null;
            });
        }

        /**
         * Runs {@code call}: it must succeed when {@code refusal} is null, else throw that type (or, with
         * {@code eitherRefusal}, where two reasons apply, either IllegalArgumentException or IllegalStateException).
         */
        private <T> T expect(Class<? extends RuntimeException> refusal, boolean eitherRefusal, Supplier<T> call) {
            try {
                T result = call.get();
                if (refusal != null) {
                    fail("expected " + refusal.getSimpleName() + " (" + describeState() + "), the call succeeded");
                }
                return result;
            } catch (IllegalArgumentException | IllegalStateException e) {
                if (refusal == null) {
                    fail("expected success (" + describeState() + "), got " + e, e);
                }
                boolean ok = refusal.isInstance(e) || eitherRefusal;
                assertTrue(ok, "expected " + refusal.getSimpleName() + ", got " + e);
                assertTrue(e.getMessage() != null && !e.getMessage().isBlank(), "a refusal says why: " + e);
                return null;
            }
        }
    }

    // ---------------------------------------------------------------- plain-array helpers

    private static double[][] adopt(double[][] model, INDArray real, String what) {
        double[][] r = matrix(real);
        assertClose(model, r, what);
        return r;
    }

    private static void assertClose(double[][] expected, double[][] actual, String what) {
        assertEquals(expected.length, actual.length, what + ": rows");
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i].length, actual[i].length, what + ": columns");
            for (int j = 0; j < expected[i].length; j++) {
                double e = expected[i][j];
                double a = actual[i][j];
                if (!(Math.abs(e - a) <= TOL * Math.max(1, Math.abs(e)))) {
                    fail(what + ": element [" + i + ", " + j + "] expected " + e + ", got " + a + "\n expected "
                            + Arrays.deepToString(expected) + "\n got " + Arrays.deepToString(actual));
                }
            }
        }
    }

    private static double[][] matrix(INDArray a) {
        INDArray c = a.dup('c');
        int rows = (int) c.size(0);
        int cols = (int) c.size(1);
        double[] flat = c.data().asDouble();
        double[][] m = new double[rows][cols];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(flat, i * cols, m[i], 0, cols);
        }
        return m;
    }

    private static INDArray array(double[][] m) {
        return Nd4j.createFromArray(m).castTo(DataType.DOUBLE);
    }

    private static double[][] random(long seed, int rows, int cols, double scale) {
        SplittableRandom rng = new SplittableRandom(seed);
        double[][] m = new double[rows][cols];
        for (double[] row : m) {
            for (int j = 0; j < cols; j++) {
                row[j] = rng.nextGaussian() * scale;
            }
        }
        return m;
    }

    private static double[][] times(double[][] x, double[][] y) {
        int n = x.length;
        int k = y.length;
        int m = k == 0 ? 0 : y[0].length;
        double[][] z = new double[n][m];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < m; j++) {
                double v = 0;
                for (int t = 0; t < k; t++) {
                    v += x[i][t] * y[t][j];
                }
                z[i][j] = v;
            }
        }
        return z;
    }

    private static double[][] transpose(double[][] x) {
        int rows = x.length;
        int cols = rows == 0 ? 0 : x[0].length;
        double[][] t = new double[cols][rows];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                t[j][i] = x[i][j];
            }
        }
        return t;
    }

    /** {@code target += f·delta}, element-wise. */
    private static void add(double[][] target, double[][] delta, double f) {
        for (int i = 0; i < target.length; i++) {
            for (int j = 0; j < target[i].length; j++) {
                target[i][j] += f * delta[i][j];
            }
        }
    }

    private static double[][] copy(double[][] x) {
        double[][] c = new double[x.length][];
        for (int i = 0; i < x.length; i++) {
            c[i] = x[i].clone();
        }
        return c;
    }
}
