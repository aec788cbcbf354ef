package io.github.lora4j.benchmarks.probes;

import java.io.PrintStream;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: the forward's {@code y = x·Wᵀ} {@code [n, d]} as lora4j computes it (W as the kernel's B operand,
 * Trans) against {@code yᵀ = W·xᵀ} (W as the A operand, NoTrans) plus a Java transpose: does the other operand order
 * suit nd4j's OpenBLAS 0.3.19 better at n = 8? Medians of {@code reps} calls, 3 rounds, then whether both give the
 * same bits.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 1: the same bits at n = 8,
 * 11–30 % faster in one process and 2× slower in another on the same kernel, so lora4j keeps its formulation.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.ForwardFormulationProbe 4096 8 30
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code n} (rows of x), {@code reps} (calls per median).
 */
public final class ForwardFormulationProbe {

    private ForwardFormulationProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d n reps}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d n reps}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("ForwardFormulationProbe", args, 0, "d", null);
        int n = Probes.positive("ForwardFormulationProbe", args, 1, "n", null);
        int reps = Probes.positive("ForwardFormulationProbe", args, 2, "reps", null);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d);
        INDArray x = Nd4j.rand(DataType.FLOAT, n, d);
        INDArray y = Nd4j.create(DataType.FLOAT, n, d);
        INDArray yt = Nd4j.create(DataType.FLOAT, d, n);
        FloatPointer wp = new FloatPointer(w.data().addressPointer());
        FloatPointer xp = new FloatPointer(x.data().addressPointer());
        FloatPointer yp = new FloatPointer(y.data().addressPointer());
        FloatPointer ytp = new FloatPointer(yt.data().addressPointer());
        float[] t = new float[d * n];
        float[] u = new float[d * n];
        for (int round = 0; round < 3; round++) {
            // y = x Wᵀ   [n, d]  (101 row-major, 111 NoTrans, 112 Trans)
            double today = Probes.medianMs(() -> openblas_nolapack.cblas_sgemm(101, 111, 112, n, d, d, 1f, xp, d, wp,
                    d, 0f, yp, d), reps);
            // yᵀ = W xᵀ   [d, n]
            double flipped = Probes.medianMs(() -> openblas_nolapack.cblas_sgemm(101, 111, 112, d, n, d, 1f, wp, d,
                    xp, d, 0f, ytp, n), reps);
            double transpose = Probes.medianMs(() -> {
                ytp.position(0).get(t);
                for (int i = 0; i < d; i++) {
                    for (int j = 0; j < n; j++) {
                        u[j * d + i] = t[i * n + j];
                    }
                }
                yp.position(0).put(u);
            }, reps);
            out.printf("d=%d n=%d: x·Wᵀ %.3f ms | W·xᵀ %.3f ms + transpose %.3f ms%n", d, n, today, flipped,
                    transpose);
        }
        openblas_nolapack.cblas_sgemm(101, 111, 112, n, d, d, 1f, xp, d, wp, d, 0f, yp, d);
        openblas_nolapack.cblas_sgemm(101, 111, 112, d, n, d, 1f, wp, d, xp, d, 0f, ytp, n);
        // INDArray.equals compares within ND4J's epsilon (1e-5): the max diff says whether the bits agree (0.0)
        out.println("same bits: " + y.equals(yt.transpose()) + ", max diff " + y.sub(yt.transpose()).amaxNumber());
    }
}
