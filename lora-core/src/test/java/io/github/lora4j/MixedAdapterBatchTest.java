package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

class MixedAdapterBatchTest {

    private static final String[] NAMES = {"default", "a1", "a2", "a3", null, LoraLinear.BASE_MODEL};

    private static LoraLinear layerWithAdapters(DataType type, long seed) {
        return layerWithAdapters(type, seed, 12, 10);
    }

    /**
     * Four adapters of total rank 11. At 12 × 10 their stacked work would exceed a quarter of the base product, so
     * mixed batches group rows per adapter; at 128 × 96 they are stacked. The property runs both.
     */
    private static LoraLinear layerWithAdapters(DataType type, long seed, int in, int out) {
        LoraLinear l = TestData.trainedLayer(type, seed, in, out, LoraConfig.builder().rank(2).build(), true);
        for (int i = 1; i <= 3; i++) {
            LoraConfig c = LoraConfig.builder().rank(i + 1).alpha(2 * i).build();
            l.addAdapter("a" + i, c);
            l.setAdapterWeights("a" + i, gaussian(type, seed + 10 * i, 0.5, i + 1, in), gaussian(type, seed + 10 * i + 1, 0.5, out, i + 1));
        }
        return l;
    }

    @Property(tries = 60)
    void eachRowEqualsTheForwardOfItsOwnAdapter(@ForAll @IntRange(min = 1, max = 24) int n, @ForAll boolean stacked,
                                                 @ForAll long seed) {
        DataType type = seed % 2 == 0 ? DataType.DOUBLE : DataType.FLOAT;
        int in = stacked ? 128 : 12;
        int out = stacked ? 96 : 10;
        LoraLinear l = layerWithAdapters(type, seed, in, out);
        INDArray x = gaussian(type, seed + 99, 1.0, n, in);
        String[] per = new String[n];
        java.util.SplittableRandom rng = new java.util.SplittableRandom(seed);
        for (int i = 0; i < n; i++) {
            per[i] = NAMES[rng.nextInt(NAMES.length)];
        }
        INDArray mixed = l.forward(x, per);
        assertEquals(java.util.List.of((long) n, (long) out), java.util.Arrays.stream(mixed.shape()).boxed().toList());
        for (String name : NAMES) {
            INDArray expected;
            if (name == null || name.equals(LoraLinear.BASE_MODEL)) {
                l.disableAdapters();
                expected = l.forward(x);
                l.enableAdapters();
            } else {
                l.setActiveAdapter(name);
                expected = l.forward(x);
            }
            for (int i = 0; i < n; i++) {
                if (java.util.Objects.equals(per[i], name)) {
                    double err = TestData.normwiseRelativeError(mixed.getRow(i), expected.getRow(i));
                    // The batch and the single forward may sum in other orders (a group of one or two rows goes
                    // through gemv, larger ones through gemm): allow the dot products' rounding, 2·(in + r)·eps.
                    double eps = type == DataType.FLOAT ? Math.ulp(1f) : Math.ulp(1.0);
                    double bound = 2 * (in + 8) * eps;
                    assertTrue(err <= bound, "row " + i + " (" + name + "): " + err + " > " + bound);
                }
            }
        }
    }

    @Test
    void aSingleAdapterBatchEqualsThePlainForwardBitwise() {
        LoraLinear l = layerWithAdapters(DataType.FLOAT, 3);
        INDArray x = gaussian(DataType.FLOAT, 4, 1.0, 7, 12);
        String[] per = new String[7];
        java.util.Arrays.fill(per, "a2");
        l.setActiveAdapter("a2");
        assertBitwiseEquals(l.forward(x), l.forward(x, per), "all rows a2");
    }

    @Test
    void leadingDimensionsAreFolded() {
        LoraLinear l = layerWithAdapters(DataType.DOUBLE, 5);
        INDArray x = gaussian(DataType.DOUBLE, 6, 1.0, 2, 3, 12);
        String[] per = {"a1", null, "a3", "default", "a1", "__base__"};
        INDArray y = l.forward(x, per);
        assertEquals(java.util.List.of(2L, 3L, 10L), java.util.Arrays.stream(y.shape()).boxed().toList());
        assertBitwiseEquals(l.forward(x.reshape('c', 6, 12), per).reshape('c', 2, 3, 10), y, "3-D vs folded");
    }

    @Test
    void refusals() {
        LoraLinear l = layerWithAdapters(DataType.FLOAT, 7);
        INDArray x = gaussian(DataType.FLOAT, 8, 1.0, 3, 12);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.forward(x, new String[] {"a1", "a2"}))
                .getMessage().contains("3 rows, got 2 names"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.forward(x, new String[] {"a1", "zz", null}))
                .getMessage().contains("adapterPerRow[1]: unknown adapter 'zz'"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addAdapter(LoraLinear.BASE_MODEL, LoraConfig.builder().rank(1).build()))
                .getMessage().contains("reserved"));
        l.merge();
        assertTrue(assertThrows(IllegalStateException.class, () -> l.forward(x, new String[] {"a1", "a2", null}))
                .getMessage().contains("merged"));
    }

    /** The stacked adapters are cached between batches; any change to an adapter must show in the next batch. */
    @Test
    void aMixedBatchSeesEveryAdapterChangeMadeBetweenBatches() {
        LoraLinear l = layerWithAdapters(DataType.DOUBLE, 5, 128, 96);
        INDArray x = gaussian(DataType.DOUBLE, 6, 1.0, 4, 128);
        String[] per = {"a1", "a2", null, "a1"};
        l.forward(x, per);
        l.setAdapterWeights("a1", gaussian(DataType.DOUBLE, 7, 0.5, 2, 128), gaussian(DataType.DOUBLE, 8, 0.5, 96, 2));
        l.setActiveAdapter("a2");
        l.updateTrainable(a -> a.b().muli(-3));
        INDArray mixed = l.forward(x, per);
        l.setActiveAdapter("a1");
        INDArray a1 = l.forward(x);
        l.setActiveAdapter("a2");
        INDArray a2 = l.forward(x);
        assertTrue(TestData.normwiseRelativeError(mixed.getRow(0), a1.getRow(0)) < 1e-14, "row 0 uses the new a1");
        assertTrue(TestData.normwiseRelativeError(mixed.getRow(1), a2.getRow(1)) < 1e-14, "row 1 uses the updated a2");
    }
}
