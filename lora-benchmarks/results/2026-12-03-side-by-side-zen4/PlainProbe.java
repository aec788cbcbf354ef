package io.github.lora4j;

import io.github.lora4j.benchmarks.Fixtures;
import java.util.Arrays;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Plain (base) layer vs merged layer forward at 4096², n = 512: same one gemm, why 164 against 96 ms? */
public class PlainProbe {
    interface Body { void run(); }
    static double ms(Body b, int reps) {
        long[] t = new long[reps];
        for (int i = 0; i < reps; i++) { long t0 = System.nanoTime(); b.run(); t[i] = System.nanoTime() - t0; }
        Arrays.sort(t); return t[reps / 2] / 1e6;
    }
    public static void main(String[] args) {
        int d = 4096, r = 8, n = 512;
        long seed = d * 1000L + r * 10L + n;
        INDArray b = Fixtures.uniform(seed + 1, 1.0 / Math.sqrt(d), d);
        INDArray x = Fixtures.gaussian(seed + 2, n, d);
        LoraLinear plain = LoraLinear.base(Fixtures.weight(d, seed), b, WeightLayout.OUT_IN);
        LoraLinear layer = LoraLinear.wrap(Fixtures.weight(d, seed), b, Fixtures.config(r));
        Fixtures.addRealisticAdapter(layer, LoraLinear.DEFAULT_ADAPTER, seed + 4);
        layer.merge(MergeMode.FAST);
        INDArray y = Nd4j.createUninitialized(x.dataType(), n, d);
        for (int round = 0; round < 3; round++) {
            System.out.printf("plain %.1f  merged %.1f  plain into %.1f  merged into %.1f ms%n",
                    ms(() -> plain.forward(x), 8), ms(() -> layer.forward(x), 8),
                    ms(() -> plain.forwardInto(x, y), 8), ms(() -> layer.forwardInto(x, y), 8));
        }
    }
}
