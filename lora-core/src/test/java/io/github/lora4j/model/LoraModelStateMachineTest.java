package io.github.lora4j.model;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
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

/**
 * Model-based state machine over {@link LoraModel}'s model-wide adapter API: random sequences of add, delete,
 * setActive, disable, enable (directly and through {@link AdaptersDisabled}), merge, unmerge, setAdapterScale, new
 * adapter weights and mixed batches run against the real model and a reference held in plain {@code double} arrays.
 * After every call the reference predicts whether it must be refused (and with which exception type), the adapter
 * names, the active adapter, the enabled and merged flags, every adapter's scale, each module's output
 * {@code y = x W₀^T + b + s·(x A^T) B^T} (no update while disabled or with none active) with
 * {@code s = scale·alpha / r} ({@code / sqrt(r)} for rsLoRA), and {@code W}: bitwise {@code W₀} unless merged,
 * {@code W₀ + s·B·A} while merged; the untargeted module's {@code W} is bitwise {@code W₀} always.
 *
 * <p>DOUBLE modules: {@code m0 [4, 5]} with a bias, {@code m1} stored {@code [in = 5, out = 3]}, and an untargeted
 * {@code m2 [4, 5]}; merges are exact. The initial {@code A} of a new adapter (a function of the seed) is read back
 * once and then owned by the reference.
 */
class LoraModelStateMachineTest {

    private static final int IN = 5;
    private static final String[] TARGETED = {"m0", "m1"};
    private static final int[] OUT = {4, 3};
    private static final List<String> NAMES = List.of("default", "a", "b");
    private static final double TOL = 1e-11;

    @Property(tries = 150)
    void randomCallSequencesMatchTheReferenceModel(@ForAll("chains") ActionChain<Harness> chain) {
        chain.run();
    }

    @Provide
    Arbitrary<ActionChain<Harness>> chains() {
        Arbitrary<Long> seeds = Arbitraries.longs();
        return ActionChain.startWith(Harness::new)
                .withAction(3, action(Combinators.combine(name(), Arbitraries.integers().between(1, 4),
                        Arbitraries.of(1.0, 2.0, 8.0), Arbitraries.of(false, true), seeds)
                        .as((n, r, alpha, rs, seed) -> call("addAdapter(" + n + ", r=" + r + ", alpha=" + alpha + ", rsLora="
                                + rs + ")", h -> h.add(n, r, alpha, rs, seed)))))
                .withAction(1, action(name().map(n -> call("deleteAdapter(" + n + ")", h -> h.delete(n)))))
                .withAction(3, action(name().map(n -> call("setActiveAdapter(" + n + ")", h -> h.setActive(n)))))
                .withAction(1, action(Arbitraries.just(call("disableAdapters()", Harness::disable))))
                .withAction(1, action(Arbitraries.just(call("enableAdapters()", Harness::enable))))
                .withAction(2, action(Arbitraries.just(call("try (adaptersDisabled())", Harness::disabledBlock))))
                .withAction(2, action(Arbitraries.just(call("merge()", Harness::merge))))
                .withAction(2, action(Arbitraries.just(call("unmerge()", Harness::unmerge))))
                .withAction(3, action(Combinators.combine(name(), Arbitraries.of(-2.0, 0.0, 0.5, 1.0, 3.0))
                        .as((n, c) -> call("setAdapterScale(" + n + ", " + c + ")", h -> h.setScale(n, c)))))
                .withAction(3, action(Combinators.combine(name(), seeds)
                        .as((n, seed) -> call("new weights for " + n, h -> h.randomise(n, seed)))))
                .withAction(2, action(seeds.map(seed -> call("mixed batch", h -> h.mixed(seed)))))
                .withMaxTransformations(30);
    }

    private static Arbitrary<String> name() {
        return Arbitraries.frequencyOf(Tuple.of(10, Arbitraries.of(NAMES)),
                Tuple.of(1, Arbitraries.of(LoraLinear.BASE_MODEL, "missing")));
    }

    private static Action.Independent<Harness> action(Arbitrary<Transformer<Harness>> calls) {
        return () -> calls;
    }

    private static Transformer<Harness> call(String description, Consumer<Harness> call) {
        return Transformer.mutate(description, call);
    }

    /** What the reference knows about one adapter: its config and, per targeted module, A and B. */
    private static final class RefAdapter {
        final int r;
        final double alpha;
        final boolean rs;
        double scale = 1.0;
        final double[][][] a = new double[TARGETED.length][][];
        final double[][][] b = new double[TARGETED.length][][];

        RefAdapter(int r, double alpha, boolean rs) {
            this.r = r;
            this.alpha = alpha;
            this.rs = rs;
        }

        double s() {
            double sa = scale * alpha;
            return rs ? sa / Math.sqrt(r) : sa / r;
        }
    }

    static final class Harness {
        final LoraModel model;
        final INDArray[] w = new INDArray[3];
        final long[][] w0Bits = new long[3][];
        final double[][][] w0 = new double[TARGETED.length][][];    // [out][in] whatever the layout
        final double[] bias0;
        final INDArray x = gaussian(DataType.DOUBLE, 99, 1, 3, IN);
        final Map<String, RefAdapter> adapters = new LinkedHashMap<>();
        String active = "default";
        boolean enabled = true;
        boolean merged;

        Harness() {
            w[0] = gaussian(DataType.DOUBLE, 1, 0.5, OUT[0], IN);
            INDArray b0 = gaussian(DataType.DOUBLE, 2, 0.5, OUT[0]);
            w[1] = gaussian(DataType.DOUBLE, 3, 0.5, IN, OUT[1]);     // [in, out]
            w[2] = gaussian(DataType.DOUBLE, 4, 0.5, 4, IN);
            model = LoraModel.builder().linear("m0", w[0], b0).linearInOut("m1", w[1], null).linear("m2", w[2], null)
                    .build();
            model.applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("m0", "m1"));
            for (int i = 0; i < 3; i++) {
                w0Bits[i] = bits(w[i]);
            }
            w0[0] = matrix(w[0]);
            w0[1] = transpose(matrix(w[1]));
            bias0 = b0.toDoubleVector();
            RefAdapter d = new RefAdapter(2, 4, false);
            readBack("default", d);
            adapters.put("default", d);
            check();
        }

        // ------------------------------------------------------------ actions

        void add(String name, int r, double alpha, boolean rs, long seed) {
            LoraConfig cfg = LoraConfig.builder().rank(r).alpha(alpha).rsLora(rs).seed(seed).build();
            boolean refuse = adapters.containsKey(name) || name.equals(LoraLinear.BASE_MODEL);   // any r >= 1, as PEFT
            expect(refuse ? IllegalArgumentException.class : null, () -> model.addAdapter(name, cfg));
            if (!refuse) {
                RefAdapter ad = new RefAdapter(r, alpha, rs);
                readBack(name, ad);
                adapters.put(name, ad);
            }
            check();
        }

        void delete(String name) {
            Class<? extends RuntimeException> refusal = !adapters.containsKey(name) ? IllegalArgumentException.class
                    : merged && name.equals(active) ? IllegalStateException.class : null;
            expect(refusal, () -> model.deleteAdapter(name));
            if (refusal == null) {
                adapters.remove(name);
                if (name.equals(active)) {
                    active = null;
                }
            }
            check();
        }

        void setActive(String name) {
            Class<? extends RuntimeException> refusal = !adapters.containsKey(name) ? IllegalArgumentException.class
                    : merged ? IllegalStateException.class : null;
            expect(refusal, () -> model.setActiveAdapter(name));
            if (refusal == null) {
                active = name;
            }
            check();
        }

        void disable() {
            expect(merged ? IllegalStateException.class : null, model::disableAdapters);
            if (!merged) {
                enabled = false;
            }
            check();
        }

        void enable() {
            expect(null, model::enableAdapters);
            enabled = true;
            check();
        }

        /** A try-with-resources block: base outputs inside, the previous enabled state after. */
        void disabledBlock() {
            if (merged) {
                expect(IllegalStateException.class, model::adaptersDisabled);
                check();
                return;
            }
            boolean was = enabled;
            try (AdaptersDisabled off = model.adaptersDisabled()) {
                enabled = false;
                check();
            }
            enabled = was;
            check();
        }

        void merge() {
            boolean refuse = merged || !enabled || active == null;
            expect(refuse ? IllegalStateException.class : null, model::merge);
            if (!refuse) {
                merged = true;
            }
            check();
        }

        void unmerge() {
            expect(merged ? null : IllegalStateException.class, model::unmerge);
            merged = false;
            check();
        }

        void setScale(String name, double c) {
            Class<? extends RuntimeException> refusal = !adapters.containsKey(name) ? IllegalArgumentException.class
                    : merged && name.equals(active) ? IllegalStateException.class : null;
            expect(refusal, () -> model.setAdapterScale(name, c));
            if (refusal == null) {
                adapters.get(name).scale = c;
            }
            check();
        }

        /** New random A and B for adapter {@code name} on every targeted module (each module refuses while merged). */
        void randomise(String name, long seed) {
            RefAdapter ad = adapters.get(name);
            if (ad == null) {
                return;
            }
            boolean refuse = merged && name.equals(active);
            for (int k = 0; k < TARGETED.length; k++) {
                INDArray a = gaussian(DataType.DOUBLE, seed + 2L * k, 0.5, ad.r, IN);
                INDArray b = gaussian(DataType.DOUBLE, seed + 2L * k + 1, 0.5, OUT[k], ad.r);
                LoraLinear m = model.module(TARGETED[k]);
                expect(refuse ? IllegalStateException.class : null, () -> m.setAdapterWeights(name, a, b));
                if (!refuse) {
                    ad.a[k] = matrix(a);
                    ad.b[k] = matrix(b);
                }
            }
            check();
        }

        /** A mixed batch: each row's adapter, null or BASE_MODEL; refused while merged. */
        void mixed(long seed) {
            String[] rows = new String[(int) x.rows()];
            List<String> choices = new ArrayList<>(adapters.keySet());
            choices.add(LoraLinear.BASE_MODEL);
            choices.add(null);
            for (int i = 0; i < rows.length; i++) {
                rows[i] = choices.get((int) Math.floorMod(seed + 31L * i, (long) choices.size()));
            }
            for (int k = 0; k < TARGETED.length; k++) {
                String p = TARGETED[k];
                int kk = k;
                INDArray y = expectResult(merged ? IllegalStateException.class : null, () -> model.forward(p, x, rows));
                if (y != null) {
                    double[][] got = matrix(y);
                    for (int i = 0; i < rows.length; i++) {
                        // null, BASE_MODEL, or adapters disabled: the base module
                        RefAdapter ad = !enabled || rows[i] == null || rows[i].equals(LoraLinear.BASE_MODEL) ? null
                                : adapters.get(rows[i]);
                        double[] want = expectedRow(kk, i, ad);
                        for (int o = 0; o < want.length; o++) {
                            assertEquals(want[o], got[i][o], TOL, p + " mixed row " + i + " (" + rows[i] + ")");
                        }
                    }
                }
            }
            check();
        }

        // ------------------------------------------------------------ the reference's predictions

        /** Row {@code i} of module {@code k}'s output through {@code ad} (null: the base module). */
        double[] expectedRow(int k, int i, RefAdapter ad) {
            double[] xi = x.getRow(i).toDoubleVector();
            double[] y = new double[OUT[k]];
            for (int o = 0; o < OUT[k]; o++) {
                double v = k == 0 ? bias0[o] : 0;
                for (int j = 0; j < IN; j++) {
                    v += xi[j] * w0[k][o][j];
                }
                y[o] = v;
            }
            if (ad != null) {
                for (int q = 0; q < ad.r; q++) {
                    double u = 0;
                    for (int j = 0; j < IN; j++) {
                        u += xi[j] * ad.a[k][q][j];
                    }
                    for (int o = 0; o < OUT[k]; o++) {
                        y[o] += ad.s() * u * ad.b[k][o][q];
                    }
                }
            }
            return y;
        }

        void check() {
            assertEquals(new ArrayList<>(adapters.keySet()), model.adapterNames(), "adapter names");
            assertEquals(active, model.activeAdapter(), "active adapter");
            assertEquals(enabled, model.adaptersEnabled(), "enabled");
            assertEquals(merged, model.isMerged(), "merged");
            RefAdapter on = enabled && active != null ? adapters.get(active) : null;
            for (int k = 0; k < TARGETED.length; k++) {
                LoraLinear m = model.module(TARGETED[k]);
                for (Map.Entry<String, RefAdapter> e : adapters.entrySet()) {
                    assertEquals(e.getValue().scale, m.adapter(e.getKey()).scale(), "scale of " + e.getKey());
                    assertEquals(e.getValue().s(), m.adapter(e.getKey()).scaling(), 1e-15 * Math.abs(e.getValue().s()),
                            "scaling of " + e.getKey());
                }
                if (merged) {
                    double[][] expected = new double[OUT[k]][IN];
                    RefAdapter ad = adapters.get(active);
                    for (int o = 0; o < OUT[k]; o++) {
                        for (int j = 0; j < IN; j++) {
                            double d = 0;
                            for (int q = 0; q < ad.r; q++) {
                                d += ad.b[k][o][q] * ad.a[k][q][j];
                            }
                            expected[o][j] = w0[k][o][j] + ad.s() * d;
                        }
                    }
                    double[][] actual = k == 0 ? matrix(w[0]) : transpose(matrix(w[1]));
                    for (int o = 0; o < OUT[k]; o++) {
                        assertArrayEquals(expected[o], actual[o], TOL, TARGETED[k] + " merged W = W0 + s·B·A");
                    }
                } else {
                    assertArrayEquals(w0Bits[k], bits(w[k]), TARGETED[k] + " W bitwise W0 while not merged");
                }
                assertTrue(m.weight() == w[k], "the module works on the caller's array");
                double[][] y = matrix(model.forward(TARGETED[k], x));
                for (int i = 0; i < y.length; i++) {
                    assertArrayEquals(expectedRow(k, i, on), y[i], TOL, TARGETED[k] + " output row " + i);
                }
            }
            assertArrayEquals(w0Bits[2], bits(w[2]), "untargeted W never written");
        }

        private void readBack(String name, RefAdapter ad) {
            for (int k = 0; k < TARGETED.length; k++) {
                LoraLinear m = model.module(TARGETED[k]);
                ad.a[k] = matrix(m.loraA(name));
                ad.b[k] = matrix(m.loraB(name));
                for (double[] row : ad.b[k]) {
                    for (double v : row) {
                        assertEquals(0.0, v, "a new adapter's B is 0");
                    }
                }
            }
        }

        private void expect(Class<? extends RuntimeException> refusal, Runnable call) {
            expectResult(refusal, () -> {
                call.run();
                return null;
            });
        }

        private <T> T expectResult(Class<? extends RuntimeException> refusal, java.util.function.Supplier<T> call) {
            try {
                T result = call.get();
                if (refusal != null) {
                    fail("expected " + refusal.getSimpleName() + " (" + this + "), the call succeeded");
                }
                return result;
            } catch (IllegalArgumentException | IllegalStateException e) {
                if (refusal == null) {
                    fail("expected success (" + this + "), got " + e, e);
                }
                assertTrue(refusal.isInstance(e), "expected " + refusal.getSimpleName() + ", got " + e);
                assertTrue(e.getMessage() != null && !e.getMessage().isBlank(), "a refusal says why: " + e);
                return null;
            }
        }

        @Override
        public String toString() {
            return "active=" + active + ", enabled=" + enabled + ", merged=" + merged + ", adapters=" + adapters.keySet();
        }
    }

    static double[][] matrix(INDArray a) {
        double[][] m = new double[(int) a.rows()][];
        for (int i = 0; i < m.length; i++) {
            m[i] = a.getRow(i).toDoubleVector();
        }
        return m;
    }

    static double[][] transpose(double[][] m) {
        double[][] t = new double[m[0].length][m.length];
        for (int i = 0; i < m.length; i++) {
            for (int j = 0; j < m[0].length; j++) {
                t[j][i] = m[i][j];
            }
        }
        return t;
    }
}
