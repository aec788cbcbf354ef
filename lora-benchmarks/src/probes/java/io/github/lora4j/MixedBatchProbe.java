package io.github.lora4j;

import io.github.lora4j.Kernels.Block;
import io.github.lora4j.benchmarks.probes.Probes;
import java.io.PrintStream;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: the rates behind the constants of {@code MixedBatch}'s cost model, each measured on the kernel seam
 * the mixed batch itself calls ({@link Kernels#gemm(Block, boolean, Block, boolean, Block, double, double) block
 * gemm}, row copies), float32:
 * <ol>
 *   <li>{@code call}: one block gemv on tiny hot operands ({@code [1, 64] × [4, 64]ᵀ}): the cost of a call;</li>
 *   <li>{@code threaded gemv}: one {@code [r, d]} gemv straight through cblas just above OpenBLAS's threading
 *       threshold ({@code r·d ≥ 9216}) against the block gemm, which cuts it below;</li>
 *   <li>{@code stream} / {@code cached}: the per-row pair {@code u = x_i A_iᵀ}, {@code y_i += s u B_iᵀ} over
 *       {@code n} rows with {@code n} distinct adapters (read from memory) and with one adapter (from cache), as
 *       adapter bytes per ns after the calls' cost;</li>
 *   <li>{@code small gemm}: one adapter's pair over 64 rows, flops per ns;</li>
 *   <li>{@code stacked gemm}: {@code [n, d] × [R, d]ᵀ} with {@code R = 256}, flops per ns;</li>
 *   <li>{@code row copy}: gathering {@code n} rows of {@code d}, ns per row call and bytes per ns;</li>
 *   <li>{@code fallback call}: the block gemv of item 1 through ND4J ({@code lora4j.blas.fallback}).</li>
 * </ol>
 * Medians of {@code reps} timings each. Its run: {@code lora-benchmarks/results/2026-12-05-many-adapters/README.md}.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.MixedBatchProbe 1024 1000 8 15
 * </pre>
 * Arguments: {@code d} (adapters {@code A [r, d]}, {@code B [d, r]}), {@code n} (rows, and distinct adapters of the
 * stream case), {@code r}, {@code reps}. In package {@code io.github.lora4j} for the package-private seam.
 */
public final class MixedBatchProbe {

    private MixedBatchProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d n r reps}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe, printing to {@code out}.
     *
     * @param out  where the results go
     * @param args {@code d n r reps}
     */
    public static void run(PrintStream out, String[] args) {
        int d = Probes.positive("MixedBatchProbe", args, 0, "d", 1024);
        int n = Probes.positive("MixedBatchProbe", args, 1, "n", 1000);
        int r = Probes.positive("MixedBatchProbe", args, 2, "r", 8);
        int reps = Probes.positive("MixedBatchProbe", args, 3, "reps", 15);
        DataType f = DataType.FLOAT;
        Nd4j.getRandom().setSeed(1);

        // 1. a call
        INDArray tx = Nd4j.rand(f, 1, 64);
        INDArray ta = Nd4j.rand(f, 4, 64);
        INDArray tu = Nd4j.create(f, 1, 4);
        Block bx = Block.of(tx);
        Block ba = Block.of(ta);
        Block bu = Block.of(tu);
        int calls = 2000;
        double callNs = Probes.quantile(Probes.times(() -> {
            for (int i = 0; i < calls; i++) {
                Kernels.gemm(bx, false, ba, true, bu, 1.0, 0.0);
            }
        }, reps), 0.5) / calls;
        out.printf("call: %.1f ns per block gemv [1, 64] x [4, 64]^T (median of %d x %d calls)%n", callNs, reps, calls);

        // 2. threaded gemv
        int tr = Math.max(3, (Kernels.SINGLE_THREAD_GEMV_ELEMENTS + d - 1) / d);
        INDArray wa = Nd4j.rand(f, tr, d);
        INDArray wx = Nd4j.rand(f, 1, d);
        INDArray wu = Nd4j.create(f, 1, tr);
        FloatPointer pa = new FloatPointer(wa.data().addressPointer());
        FloatPointer px = new FloatPointer(wx.data().addressPointer());
        FloatPointer pu = new FloatPointer(wu.data().addressPointer());
        Block wba = Block.of(wa);
        Block wbx = Block.of(wx);
        Block wbu = Block.of(wu);
        int gemvs = 200;
        double threadedUs = Probes.quantile(Probes.times(() -> {
            for (int i = 0; i < gemvs; i++) {
                openblas_nolapack.cblas_sgemv(openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans, tr, d,
                        1f, pa, d, px, 1, 0f, pu, 1);
            }
        }, reps), 0.5) / gemvs / 1e3;
        double cutUs = Probes.quantile(Probes.times(() -> {
            for (int i = 0; i < gemvs; i++) {
                Kernels.gemm(wbx, false, wba, true, wbu, 1.0, 0.0);
            }
        }, reps), 0.5) / gemvs / 1e3;
        out.printf("threaded gemv: [%d, %d] (%d elements) %.2f us per cblas call, %.2f us per block gemm cut below %d%n",
                tr, d, tr * d, threadedUs, cutUs, Kernels.SINGLE_THREAD_GEMV_ELEMENTS);

        // 3. stream and cached
        INDArray[] as = new INDArray[n];
        INDArray[] bs = new INDArray[n];
        Block[] bas = new Block[n];
        Block[] bbs = new Block[n];
        for (int k = 0; k < n; k++) {
            as[k] = Nd4j.rand(f, r, d);
            bs[k] = Nd4j.rand(f, d, r).muli(1e-3);
            bas[k] = Block.of(as[k]);
            bbs[k] = Block.of(bs[k]);
        }
        INDArray x = Nd4j.rand(f, n, d);
        INDArray y = Nd4j.create(f, n, d);
        INDArray u = Nd4j.create(f, n, r);
        Block xb = Block.of(x);
        Block yb = Block.of(y);
        Block ub = Block.of(u);
        double streamMs = Probes.medianMs(() -> rows(xb, yb, ub, bas, bbs, n, n), reps);
        double cachedMs = Probes.medianMs(() -> rows(xb, yb, ub, bas, bbs, n, 1), reps);
        int pieces = Kernels.gemvPieces(r, d) + Kernels.gemvPieces(d, r);
        double bytes = 4.0 * n * r * 2 * d;
        double callsMs = 2 * n * pieces * callNs / 1e6 / 2;    // about half the calls overlap with the streaming
        out.printf("stream: %.2f ms for %d rows, %d distinct adapters: %.1f bytes/ns after calls%n", streamMs, n, n,
                bytes / ((streamMs - callsMs) * 1e6));
        out.printf("cached: %.2f ms for %d rows, one adapter: %.1f bytes/ns after calls%n", cachedMs, n,
                bytes / ((cachedMs - callsMs) * 1e6));

        // 4. small gemm: one adapter's pair over 64 rows
        int m = Math.min(64, n);
        Block xm = xb.rows(0, m);
        Block ym = yb.rows(0, m);
        Block um = ub.rows(0, m);
        int pairs = 50;
        double smallUs = Probes.quantile(Probes.times(() -> {
            for (int i = 0; i < pairs; i++) {
                Kernels.gemm(xm, false, bas[0], true, um, 1.0, 0.0);
                Kernels.gemm(um, false, bbs[0], true, ym, 1.0, 1.0);
            }
        }, reps), 0.5) / pairs / 1e3;
        out.printf("small gemm: %.2f us for one pair over %d rows: %.1f flops/ns%n", smallUs, m,
                4.0 * m * r * d / (smallUs * 1e3));

        // 5. stacked gemm
        int bigR = 256;
        INDArray cat = Nd4j.rand(f, bigR, d);
        INDArray wide = Nd4j.create(f, n, bigR);
        double bigMs = Probes.medianMs(() -> Kernels.gemm(x, cat, wide, false, true, 1.0, 0.0), reps);
        out.printf("stacked gemm: %.2f ms for [%d, %d] x [%d, %d]^T: %.1f flops/ns%n", bigMs, n, d, bigR, d,
                2.0 * n * bigR * d / (bigMs * 1e6));

        // 6. row copy
        int[] order = new int[n];
        for (int i = 0; i < n; i++) {
            order[i] = (int) ((i * 7919L) % n);
        }
        double copyMs = Probes.medianMs(() -> Kernels.gatherRows(xb, order, yb), reps);
        out.printf("row copy: %.2f ms for %d rows of %d: %.0f ns per row, %.1f bytes/ns%n", copyMs, n, d,
                copyMs * 1e6 / n, 4.0 * n * d / (copyMs * 1e6));

        // 7. fallback call
        Kernels.forceFallback(true);
        try {
            int slow = 200;
            double fallbackNs = Probes.quantile(Probes.times(() -> {
                for (int i = 0; i < slow; i++) {
                    Kernels.gemm(bx, false, ba, true, bu, 1.0, 0.0);
                }
            }, reps), 0.5) / slow;
            out.printf("fallback call: %.0f ns per block gemv through ND4J%n", fallbackNs);
        } finally {
            Kernels.forceFallback(false);
        }
    }

    /** Row {@code i} with adapter {@code i mod k}: {@code u_i = x_i A^T}, {@code y_i += u_i B^T}. */
    private static void rows(Block x, Block y, Block u, Block[] a, Block[] b, int n, int k) {
        for (int i = 0; i < n; i++) {
            Block ui = u.rows(i, 1);
            Kernels.gemm(x.rows(i, 1), false, a[i % k], true, ui, 1.0, 0.0);
            Kernels.gemm(ui, false, b[i % k], true, y.rows(i, 1), 1.0, 1.0);
        }
    }
}
