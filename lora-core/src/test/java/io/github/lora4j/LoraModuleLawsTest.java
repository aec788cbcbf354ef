package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The laws every adapter layer keeps, checked once over layer kind × data type through {@link LoraModule}: scale,
 * disable, merge/unmerge exactness, and the add/delete/activate state machine against a model.
 */
class LoraModuleLawsTest {

    /** A layer of {@code kind} with no adapter, and an input for it. */
    private record Fixture(LoraModule layer, Object input, INDArray weight) {
    }

    private static Fixture fixture(LoraModule.Kind kind, DataType type, long seed) {
        switch (kind) {
            case LINEAR: {
                INDArray w = gaussian(type, seed, 1, 7, 9);
                return new Fixture(LoraLinear.base(w, gaussian(type, seed + 1, 1, 7), WeightLayout.OUT_IN),
                        gaussian(type, seed + 2, 1, 5, 9), w);
            }
            case EMBEDDING: {
                INDArray t = gaussian(type, seed, 1, 11, 6);
                return new Fixture(LoraEmbedding.base(t), new long[] {3, 0, 10, 3, 7}, t);
            }
            default: {
                INDArray k = gaussian(type, seed, 1, 4, 3, 3, 3);
                return new Fixture(LoraConv2d.base(k, gaussian(type, seed + 1, 1, 4), new int[] {1, 1},
                        new int[] {1, 1}), gaussian(type, seed + 2, 1, 2, 3, 5, 6), k);
            }
        }
    }

    private static INDArray forward(Fixture f) {
        switch (f.layer().kind()) {
            case LINEAR:
                return ((LoraLinear) f.layer()).forward((INDArray) f.input());
            case EMBEDDING:
                return ((LoraEmbedding) f.layer()).forward((long[]) f.input());
            default:
                return ((LoraConv2d) f.layer()).forward((INDArray) f.input());
        }
    }

    /** Adds adapter {@code name} of rank 2 with random non-zero A and B, through the interface only. */
    private static void addRandom(LoraModule m, String name, DataType type, long seed) {
        m.addAdapter(name, LoraConfig.builder().rank(2).alpha(3).seed(seed).build());
        // A convolution takes PEFT's 4-d shapes [r, in, kh, kw] and [out, r, 1, 1]; the others their A and B.
        LoraAdapter ad = m.adapter(name);
        long[] a = m instanceof LoraConv2d c ? c.loraA(name).shape() : ad.a().shape();
        long[] b = m instanceof LoraConv2d c ? c.loraB(name).shape() : ad.b().shape();
        m.setAdapterWeights(name, gaussian(type, seed + 10, 0.5, a), gaussian(type, seed + 11, 0.5, b));
    }

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    private static double tolerance(DataType type) {
        return type == DataType.FLOAT ? 2e-5 : 1e-12;
    }

    @Property(tries = 30)
    void scaleDisableAndMergeLawsHoldForEveryKind(@ForAll LoraModule.Kind kind, @ForAll("types") DataType type,
            @ForAll @IntRange(min = 1, max = 10_000) int seed, @ForAll boolean fast) {
        Fixture f = fixture(kind, type, seed);
        LoraModule m = f.layer();
        assertEquals(kind, m.kind());
        INDArray base = forward(f).dup();
        INDArray w0 = f.weight().dup();
        addRandom(m, "a", type, seed);
        m.setActiveAdapter("a");
        INDArray adapted = forward(f).dup();
        // scale: y(scale) - y_base = scale · (y(1) - y_base), and scale 1 restores the scaling bitwise
        double s1 = m.adapter("a").scaling();
        m.setAdapterScale("a", 2.5);
        INDArray scaled = forward(f).dup();
        double err = TestData.maxRelativeError(adapted.sub(base).muli(2.5), scaled.sub(base), 1);
        assertTrue(err <= tolerance(type) * 10, kind + " " + type + ": scale law off by " + err);
        m.setAdapterScale("a", 1.0);
        assertEquals(s1, m.adapter("a").scaling(), 0.0, "scale 1 restores the config's scaling exactly");
        // disable: the base output bitwise, and enable brings the adapter back bitwise
        m.disableAdapters();
        assertFalse(m.adaptersEnabled());
        assertBitwiseEquals(base, forward(f), kind + " disabled output");
        m.enableAdapters();
        assertBitwiseEquals(adapted, forward(f), kind + " re-enabled output");
        // merge: the same output to rounding, W changed; unmerge (EXACT) restores W bitwise
        m.merge(fast ? MergeMode.FAST : MergeMode.EXACT);
        assertTrue(m.isMerged());
        double mergedErr = TestData.maxRelativeError(adapted, forward(f), 1);
        assertTrue(mergedErr <= tolerance(type) * 10, kind + " " + type + ": merged output off by " + mergedErr);
        assertThrows(IllegalStateException.class, () -> m.deleteAdapter("a"), "delete while merged");
        assertThrows(IllegalStateException.class, () -> m.setAdapterScale("a", 2.0), "scale while merged");
        assertThrows(IllegalStateException.class, m::disableAdapters, "disable while merged");
        m.unmerge();
        assertFalse(m.isMerged());
        if (!fast) {
            assertBitwiseEquals(w0, f.weight(), kind + " W after an exact merge and unmerge");
        }
        // mergeAndUnload: the plain layer that computes the adapted output
        m.mergeAndUnload();
        assertTrue(m.adapterNames().isEmpty());
        assertNull(m.activeAdapter());
        assertEquals(0, m.trainableParameterCount());
        assertTrue(TestData.maxRelativeError(adapted, forward(f), 1) <= tolerance(type) * 10);
    }

    /** One step of the add/delete/activate state machine: 0 add, 1 activate, 2 delete, 3 merge/unmerge. */
    @Property(tries = 30)
    void addDeleteActivateFollowTheModel(@ForAll LoraModule.Kind kind, @ForAll("types") DataType type,
            @ForAll @Size(max = 25) List<@IntRange(min = 0, max = 3) Integer> ops,
            @ForAll @Size(max = 25) List<@IntRange(min = 0, max = 3) Integer> picks) {
        Fixture f = fixture(kind, type, 5);
        LoraModule m = f.layer();
        INDArray base = forward(f).dup();
        List<String> names = new ArrayList<>();
        String active = null;
        boolean merged = false;
        int next = 0;
        for (int i = 0; i < ops.size(); i++) {
            int pick = i < picks.size() ? picks.get(i) : 0;
            String known = names.isEmpty() ? null : names.get(pick % names.size());
            switch (ops.get(i)) {
                case 0: {
                    String name = "n" + next++;
                    addRandom(m, name, type, 100 + next);
                    names.add(name);
                    break;
                }
                case 1:
                    if (known == null) {
                        assertThrows(IllegalArgumentException.class, () -> m.setActiveAdapter("missing"));
                    } else if (merged && !known.equals(active)) {
                        assertThrows(IllegalStateException.class, () -> m.setActiveAdapter(known));
                    } else {
                        m.setActiveAdapter(known);
                        active = known;
                    }
                    break;
                case 2:
                    if (known == null) {
                        assertThrows(IllegalArgumentException.class, () -> m.deleteAdapter("missing"));
                    } else if (merged && known.equals(active)) {
                        assertThrows(IllegalStateException.class, () -> m.deleteAdapter(known));
                    } else {
                        m.deleteAdapter(known);
                        names.remove(known);
                        if (known.equals(active)) {
                            active = null;
                        }
                    }
                    break;
                default:
                    if (merged) {
                        m.unmerge();
                        merged = false;
                    } else if (active != null) {
                        m.merge();
                        merged = true;
                    }
                    break;
            }
            assertEquals(names, m.adapterNames(), "names after op " + i);
            assertEquals(active, m.activeAdapter(), "active after op " + i);
            assertEquals(merged, m.isMerged(), "merged after op " + i);
        }
        if (merged) {
            m.unmerge();
        }
        if (active == null) {
            assertBitwiseEquals(base, forward(f), kind + " with no active adapter gives the base output");
        }
    }
}
