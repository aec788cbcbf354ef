package io.github.lora4j.benchmarks.probes;

import static org.bytedeco.openblas.global.openblas_nolapack.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_nolapack.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_nolapack.cblas_sgemm;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import java.io.PrintStream;
import org.bytedeco.javacpp.FloatPointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: each part of one training step of a {@code LoraLinear}, timed in place in the order a step runs
 * them: forward, {@code backward(g, true)} (with {@code dL/dx}), {@code zeroGrad}, then forward, {@code backward(g,
 * false)}, {@code zeroGrad}, and the bare {@code cblas_sgemm} of {@code dx = g·W} on the same arrays. Medians of
 * {@code it} steps, 3 rounds.
 *
 * <p>Its runs: {@code lora-benchmarks/results/2026-12-02-side-by-side-skylakex/README.md}, item 2 (the backward with
 * {@code dx} is that one sgemm and nothing else), and {@code 2026-12-03-side-by-side-zen4/README.md}, item 1
 * ({@code OPENBLAS_CORETYPE=SkylakeX} against the Zen kernel).
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.StepProbe 4096 8 8 30
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code r}, {@code n} (batch rows), {@code it} (steps per median).
 * Uses lora4j's public API only.
 */
public final class StepProbe {

    private StepProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d r n it}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d r n it}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("StepProbe", args, 0, "d", null);
        int r = Probes.positive("StepProbe", args, 1, "r", null);
        int n = Probes.positive("StepProbe", args, 2, "n", null);
        int it = Probes.positive("StepProbe", args, 3, "it", null);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d).subi(0.5);
        INDArray x = Nd4j.rand(DataType.FLOAT, n, d);
        INDArray g = Nd4j.rand(DataType.FLOAT, n, d);
        INDArray dx = Nd4j.create(DataType.FLOAT, n, d);
        LoraLinear layer = LoraLinear.wrap(w.dup(), Nd4j.zeros(DataType.FLOAT, d),
                LoraConfig.builder().rank(r).alpha(2 * r).build());
        layer.train();
        FloatPointer pw = new FloatPointer(w.data().addressPointer());
        FloatPointer pg = new FloatPointer(g.data().addressPointer());
        FloatPointer pdx = new FloatPointer(dx.data().addressPointer());
        for (int round = 0; round < 3; round++) {
            long[] f = new long[it];
            long[] bx = new long[it];
            long[] z = new long[it];
            long[] f2 = new long[it];
            long[] b0 = new long[it];
            long[] z2 = new long[it];
            long[] raw = new long[it];
            for (int i = 0; i < it; i++) {
                long t0 = System.nanoTime();
                layer.forward(x);
                long t1 = System.nanoTime();
                layer.backward(g, true);
                long t2 = System.nanoTime();
                layer.zeroGrad();
                long t3 = System.nanoTime();
                layer.forward(x);
                long t4 = System.nanoTime();
                layer.backward(g, false);
                long t5 = System.nanoTime();
                layer.zeroGrad();
                long t6 = System.nanoTime();
                // dx = g W   [n, d]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1f, pg, d, pw, d, 0f, pdx, d);
                long t7 = System.nanoTime();
                f[i] = t1 - t0;
                bx[i] = t2 - t1;
                z[i] = t3 - t2;
                f2[i] = t4 - t3;
                b0[i] = t5 - t4;
                z2[i] = t6 - t5;
                raw[i] = t7 - t6;
            }
            out.printf("d=%d r=%d n=%d ms: forward %.3f | backward(dx) %.3f | zeroGrad %.3f || forward %.3f"
                    + " | backward(no dx) %.3f | zeroGrad %.3f || raw g.W sgemm %.3f%n", d, r, n, Probes.medianMs(f),
                    Probes.medianMs(bx), Probes.medianMs(z), Probes.medianMs(f2), Probes.medianMs(b0),
                    Probes.medianMs(z2), Probes.medianMs(raw));
        }
    }
}
