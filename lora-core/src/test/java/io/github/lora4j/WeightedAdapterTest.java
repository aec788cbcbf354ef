package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class WeightedAdapterTest {

    private static LoraLinear twoAdapters(long seed, int in, int out) {
        LoraLinear l = TestData.trainedLayer(DataType.DOUBLE, seed, in, out, LoraConfig.builder().rank(2).alpha(4).build(), false);
        l.addAdapter("b", LoraConfig.builder().rank(3).alpha(1.5).rsLora(true).build());
        l.setAdapterWeights("b", gaussian(DataType.DOUBLE, seed + 7, 1, 3, in), gaussian(DataType.DOUBLE, seed + 8, 1, out, 3));
        return l;
    }

    /** Σ wᵢ sᵢ Bᵢ Aᵢ computed directly. */
    private static INDArray weightedDelta(LoraLinear l, List<String> names, double[] w) {
        INDArray d = Nd4j.zeros(DataType.DOUBLE, l.outFeatures(), l.inFeatures());
        for (int i = 0; i < names.size(); i++) {
            LoraAdapter a = l.adapter(names.get(i));
            d.addi(a.b().mmul(a.a()).muli(w[i] * a.scaling()));
        }
        return d;
    }

    private static INDArray deltaOf(LoraLinear l, String name) {
        LoraAdapter a = l.adapter(name);
        return a.b().mmul(a.a()).muli(a.scaling());
    }

    @Property(tries = 30)
    void catCombinationIsExact(@ForAll @IntRange(min = 5, max = 20) int in, @ForAll @IntRange(min = 5, max = 20) int out,
                               @ForAll @DoubleRange(min = -2, max = 2) double w1, @ForAll @DoubleRange(min = -2, max = 2) double w2,
                               @ForAll long seed) {
        LoraLinear l = twoAdapters(seed, in, out);
        double[] w = {w1, w2};
        l.addWeightedAdapter("cat", List.of("default", "b"), w);
        assertEquals(5, l.adapter("cat").rank());
        assertEquals(1.0, l.adapter("cat").scaling());
        assertEquals("default", l.activeAdapter(), "the active adapter does not change");
        INDArray expected = weightedDelta(l, List.of("default", "b"), w);
        double err = TestData.normwiseRelativeError(deltaOf(l, "cat"), expected);
        assertTrue(err < 1e-13 || expected.amaxNumber().doubleValue() < 1e-12, "cat combination error " + err);
    }

    @Property(tries = 30)
    void svdCombinationIsTheBestRankRApproximation(@ForAll @IntRange(min = 6, max = 24) int in, @ForAll @IntRange(min = 6, max = 24) int out,
                                                    @ForAll @IntRange(min = 1, max = 5) int rank, @ForAll long seed) {
        LoraLinear l = twoAdapters(seed, in, out);
        double[] w = {0.7, -1.3};
        l.addWeightedAdapterSvd("svd", List.of("default", "b"), w, rank);
        INDArray full = weightedDelta(l, List.of("default", "b"), w);
        // Eckart–Young: the best rank-r Frobenius error is the root of the sum of squared tail singular values.
        INDArray work = full.dup('f');
        INDArray s = Nd4j.create(DataType.DOUBLE, Math.min(in, out));
        Nd4j.getBlasWrapper().lapack().gesvd(work, s, Nd4j.create(DataType.DOUBLE, new long[] {out, out}, 'f'),
                Nd4j.create(DataType.DOUBLE, new long[] {in, in}, 'f'));
        double tail = 0;
        for (int i = rank; i < s.length(); i++) {
            tail += s.getDouble(i) * s.getDouble(i);
        }
        double achieved = deltaOf(l, "svd").sub(full).norm2Number().doubleValue();
        double bound = Math.sqrt(tail);
        assertTrue(Math.abs(achieved - bound) <= 1e-9 * Math.max(1, s.getDouble(0)),
                "rank " + rank + ": achieved " + achieved + ", Eckart–Young bound " + bound);
        if (rank >= 5) {
            assertTrue(achieved <= 1e-9 * s.getDouble(0), "rank >= total rank 5 must be exact, error " + achieved);
        }
    }

    @Test
    void catKeepsARankAboveTheLayerAndSvdCapsIt() {
        LoraLinear l = twoAdapters(1, 4, 6); // min(in, out) = 4 < 2 + 3
        // PEFT's "cat" keeps every rank, also above min(in, out): rank 5 here, exact
        l.addWeightedAdapter("cat", List.of("default", "b"), new double[] {1, 1});
        assertEquals(5, l.adapter("cat").rank());
        double catErr = TestData.normwiseRelativeError(deltaOf(l, "cat"), weightedDelta(l, List.of("default", "b"), new double[] {1, 1}));
        assertTrue(catErr < 1e-12, "cat combination error " + catErr);
        // a truncated SVD has at most min(in, out) = 4 triplets
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> l.addWeightedAdapterSvd("svd5", List.of("default", "b"), new double[] {1, 1}, 5));
        assertTrue(ex.getMessage().contains("SVD target rank must be <= min(in, out) = 4") && ex.getMessage().contains("got 5"),
                ex.getMessage());
        assertEquals(List.of("b", "cat", "default"), l.adapterNames().stream().sorted().toList());
        l.addWeightedAdapterSvd("svd", List.of("default", "b"), new double[] {1, 1}, 4);
        // rank 4 = min(in, out): the combination is representable exactly
        double err = TestData.normwiseRelativeError(deltaOf(l, "svd"), weightedDelta(l, List.of("default", "b"), new double[] {1, 1}));
        assertTrue(err < 1e-12, "full-rank svd combination error " + err);
    }

    @Test
    void badArgumentsAreNamedAndAddNothing() {
        LoraLinear l = twoAdapters(2, 8, 8);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapter("x", List.of("default"), new double[] {1, 2}))
                .getMessage().contains("1 adapters and 2 weights"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapter("x", List.of("default", "nope"), new double[] {1, 2}))
                .getMessage().contains("unknown adapter 'nope'"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapter("x", List.of("b", "b"), new double[] {1, 2}))
                .getMessage().contains("distinct"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapter("x", List.of("b"), new double[] {Double.NaN}))
                .getMessage().contains("finite"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapter("b", List.of("default"), new double[] {1}))
                .getMessage().contains("already exists"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> l.addWeightedAdapterSvd("x", List.of("default"), new double[] {1}, 9))
                .getMessage().contains("got 9"));
        assertEquals(List.of("default", "b"), l.adapterNames());
    }
}
