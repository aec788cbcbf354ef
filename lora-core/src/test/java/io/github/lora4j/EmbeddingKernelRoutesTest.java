package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterProperty;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link LoraEmbedding}'s gemms go through the {@link Kernels} seam pinned to its ND4J route: whichever route is
 * forced for the rest of the library, the embedding's forward, both gradients and eval output are bitwise the same
 * (the ND4J route is the {@code Nd4j.gemm} the layer called before the seam). Unpinned, FLOAT results differ by an
 * ulp (checked: this test fails when the layer takes {@code Kernels.gemm}'s default route).
 */
class EmbeddingKernelRoutesTest {

    @AfterProperty
    void restoreRoute() {
        Kernels.forceFallback(false);
    }

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    private static List<INDArray> scenario(DataType type, long seed, int vocab, int dim, int r, int n) {
        LoraEmbedding e = LoraEmbedding.wrap(gaussian(type, seed, 1, vocab, dim),
                LoraConfig.builder().rank(r).alpha(2 * r).build());
        e.setAdapterWeights("default", gaussian(type, seed + 1, 0.5, r, vocab), gaussian(type, seed + 2, 0.5, dim, r));
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = Math.floorMod(seed * 31 + i * 7L, vocab);
        }
        List<INDArray> seen = new ArrayList<>();
        e.train();
        INDArray y = e.forward(ids);
        seen.add(y.dup());
        e.backward(gaussian(type, seed + 3, 1, y.shape()));
        seen.add(e.adapter("default").gradA().dup());
        seen.add(e.adapter("default").gradB().dup());
        e.eval();
        seen.add(e.forward(ids).dup());
        return seen;
    }

    @Property(tries = 12)
    void embeddingForwardAndBackwardAreBitwiseTheSameOnBothRoutes(@ForAll("types") DataType type,
            @ForAll @IntRange(min = 1, max = 1000) int seed, @ForAll @IntRange(min = 1, max = 40) int n,
            @ForAll @IntRange(min = 1, max = 8) int r) {
        Kernels.forceFallback(false);
        List<INDArray> direct = scenario(type, seed, 37, 19, r, n);
        Kernels.forceFallback(true);
        List<INDArray> fallback = scenario(type, seed, 37, 19, r, n);
        assertEquals(direct.size(), fallback.size());
        for (int i = 0; i < direct.size(); i++) {
            assertBitwiseEquals(fallback.get(i), direct.get(i), "result " + i + " (" + type + ")");
        }
    }
}
