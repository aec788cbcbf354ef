package io.github.lora4j.benchmarks.probes;

import static org.bytedeco.openblas.global.openblas_nolapack.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_nolapack.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_nolapack.CblasTrans;
import static org.bytedeco.openblas.global.openblas_nolapack.cblas_sgemm;

import java.io.PrintStream;
import java.nio.FloatBuffer;
import org.bytedeco.javacpp.FloatPointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: the input gradient of a training step, {@code dx = g·W} {@code [n, d]}, as lora4j computes it (one
 * NoTrans·NoTrans {@code cblas_sgemm}) against {@code dxᵀ = Wᵀ·gᵀ} (Trans·Trans) plus a Java transpose into
 * {@code dx}: is the other formulation faster on nd4j's OpenBLAS 0.3.19? Median of 40 calls each, 3 rounds, and the
 * largest difference between the two results.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-02-side-by-side-skylakex/README.md}, item 2 (Intel AVX-512 VM,
 * SkylakeX kernel): 20.3–24.0 ms against 16.7–23.5 ms for the plain call at 4096², n = 8, so no fix there.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.DxFormulationProbe 4096 8
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code n} (rows of g).
 */
public final class DxFormulationProbe {

    private DxFormulationProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d n}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d n}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("DxFormulationProbe", args, 0, "d", null);
        int n = Probes.positive("DxFormulationProbe", args, 1, "n", null);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d);
        INDArray g = Nd4j.rand(DataType.FLOAT, n, d);
        INDArray dx = Nd4j.create(DataType.FLOAT, n, d);
        INDArray dxt = Nd4j.create(DataType.FLOAT, d, n);
        INDArray dx2 = Nd4j.create(DataType.FLOAT, n, d);
        FloatPointer pw = new FloatPointer(w.data().addressPointer());
        FloatPointer pg = new FloatPointer(g.data().addressPointer());
        FloatPointer pdx = new FloatPointer(dx.data().addressPointer());
        FloatPointer pdxt = new FloatPointer(dxt.data().addressPointer());
        float[] buf = new float[d * n];
        float[] transposed = new float[d * n];
        FloatBuffer tb = dxt.data().asNioFloat();
        FloatBuffer ob = dx2.data().asNioFloat();
        for (int round = 0; round < 3; round++) {
            long[] nn = new long[40];
            long[] tt = new long[40];
            for (int it = 0; it < 40; it++) {
                long t0 = System.nanoTime();
                // dx = g W   [n, d]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, d, 1f, pg, d, pw, d, 0f, pdx, d);
                long t1 = System.nanoTime();
                // dxᵀ = Wᵀ gᵀ   [d, n], then transposed into dx2 [n, d]
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, d, n, d, 1f, pw, d, pg, d, 0f, pdxt, n);
                tb.get(0, buf);
                for (int j = 0; j < d; j++) {
                    for (int i = 0; i < n; i++) {
                        transposed[i * d + j] = buf[j * n + i];
                    }
                }
                ob.put(0, transposed);
                long t2 = System.nanoTime();
                nn[it] = t1 - t0;
                tt[it] = t2 - t1;
            }
            out.printf("d=%d n=%d NN %.3f ms  TT+transpose %.3f ms  maxdiff %g%n", d, n, Probes.medianMs(nn),
                    Probes.medianMs(tt), dx.sub(dx2).amaxNumber().doubleValue());
        }
    }
}
