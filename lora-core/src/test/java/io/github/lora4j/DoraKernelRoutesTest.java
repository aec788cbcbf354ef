package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterTry;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * DoRA's forward, backward and merge agree on the kernel seam's two routes (direct OpenBLAS with Java loops, and the
 * ND4J fallback with ND4J ops), with and without dropout.
 */
class DoraKernelRoutesTest {

    @AfterTry
    void backToTheDefaultRoute() {
        Kernels.forceFallback(false);
    }

    /** Output, dL/dx, dL/dA, dL/dB, dL/dm and the merged weight of one training step on a fresh layer. */
    private static INDArray[] run(boolean fallback, WeightLayout layout, int in, int out, int n, boolean dropout,
                                  long seed) {
        Kernels.forceFallback(fallback);
        try {
            LoraLinear l = DoraPropertiesTest.layer(DataType.DOUBLE, layout, seed, in, out, 3, true, 0.3);
            if (dropout) {
                LoraAdapter a = l.adapter("default");
                LoraConfig c = a.config().toBuilder().dropout(0.3).build();
                l.addAdapter("dropped", c);
                l.setAdapterWeights("dropped", a.a().dup(), a.b().dup(), a.magnitude().dup());
                l.setActiveAdapter("dropped");
            }
            LoraAdapter a = l.adapter(l.activeAdapter());
            l.train();
            INDArray y = l.forward(gaussian(DataType.DOUBLE, seed + 9, 1, n, in));
            INDArray dx = l.backward(gaussian(DataType.DOUBLE, seed + 10, 1, n, out));
            return new INDArray[] {y, dx, a.gradA().dup(), a.gradB().dup(), a.gradMagnitude().dup(), l.mergedWeight()};
        } finally {
            Kernels.forceFallback(false);
        }
    }

    @Property(tries = 20)
    void bothRoutesComputeTheSame(@ForAll @IntRange(min = 1, max = 20) int in, @ForAll @IntRange(min = 1, max = 20) int out,
                                  @ForAll @IntRange(min = 1, max = 5) int n, @ForAll boolean inOut,
                                  @ForAll boolean dropout, @ForAll long seed) {
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        INDArray[] direct = run(false, layout, in, out, n, dropout, seed);
        INDArray[] fallback = run(true, layout, in, out, n, dropout, seed);
        String[] what = {"y", "dx", "dA", "dB", "dm", "merged W"};
        for (int i = 0; i < what.length; i++) {
            double err = TestData.normwiseRelativeError(fallback[i], direct[i]);
            assertTrue(err <= 1e-13, what[i] + ": routes differ by " + err);
        }
    }
}
