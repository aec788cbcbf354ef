package io.github.lora4j;

import io.github.lora4j.benchmarks.probes.Probes;
import java.io.PrintStream;
import java.lang.ref.Reference;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: Δ = s·B·A by single-threaded tile sgemm calls on two Java threads (tiles small enough,
 * {@code M·N·K ≤ 2^18}, that OpenBLAS runs each call on the calling thread and wakes none of its workers), against
 * lora-core's exact pair ({@code ExactMerge.merge} then {@code unmerge}) and a bare FAST pair (two sgemm into W).
 * Medians of {@code reps}, 2 rounds, one line per tile shape. Δ alone, before any element work.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 4: 26.5–27.7 ms at 4096²,
 * r = 8 against 38.4–40.1 ms for the whole Java pair, 755–765 ms at r = 64 against 86–98 ms: small gemms are mostly
 * packing, so this route is closed.
 *
 * <p>In package {@code io.github.lora4j} because it times {@code ExactMerge}, which is package-private: the pass
 * alone, without {@code LoraLinear}'s bookkeeping, is what Δ's cost is compared with. On the class path the package
 * is one runtime package with lora-core's, so this compiles and runs.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.GemmDeltaProbe 4096 8 5
 * </pre>
 * Arguments: {@code d} (W is {@code [d, d]}), {@code r}, {@code reps} (per median).
 */
public final class GemmDeltaProbe {

    /** OpenBLAS 0.3.19 runs a gemm with {@code M·N·K} up to this on the calling thread alone. */
    private static final long SINGLE_THREAD_WORK = 262_144;
    private static final ThreadLocal<FloatPointer> SCRATCH = ThreadLocal.withInitial(
            () -> new FloatPointer(SINGLE_THREAD_WORK));
    private static final ThreadLocal<float[]> JAVA = ThreadLocal.withInitial(() -> new float[(int) SINGLE_THREAD_WORK]);

    private GemmDeltaProbe() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code d r reps}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code d r reps}
     */
    public static void run(PrintStream out, String... args) {
        int d = Probes.positive("GemmDeltaProbe", args, 0, "d", null);
        int r = Probes.positive("GemmDeltaProbe", args, 1, "r", null);
        int reps = Probes.positive("GemmDeltaProbe", args, 2, "reps", null);
        INDArray w = Nd4j.rand(DataType.FLOAT, d, d);
        INDArray a = Nd4j.rand(DataType.FLOAT, r, d).muli(0.01);
        INDArray b = Nd4j.rand(DataType.FLOAT, d, r).muli(0.01);
        FloatPointer wp = new FloatPointer(w.data().addressPointer());
        FloatPointer ap = new FloatPointer(a.data().addressPointer());
        FloatPointer bp = new FloatPointer(b.data().addressPointer());
        for (int round = 0; round < 2; round++) {
            long[] exact = new long[reps];
            long[] fast = new long[reps];
            for (int q = 0; q < reps; q++) {
                long t0 = System.nanoTime();
                MergeRecord rec = ExactMerge.merge(w, false, a, b, 0.5);
                ExactMerge.unmerge(rec);
                exact[q] = System.nanoTime() - t0;
                t0 = System.nanoTime();
                // W += s B A, then W -= s B A   [d, d], s = 0.5
                openblas_nolapack.cblas_sgemm(101, 111, 111, d, d, r, 0.5f, bp, r, ap, d, 1f, wp, d);
                openblas_nolapack.cblas_sgemm(101, 111, 111, d, d, r, -0.5f, bp, r, ap, d, 1f, wp, d);
                fast[q] = System.nanoTime() - t0;
            }
            out.printf("d=%d r=%d exact pair %.3f ms, fast pair %.3f ms%n", d, r, Probes.medianMs(exact),
                    Probes.medianMs(fast));
            for (int rowsT : new int[] {1, 2, 4, 8, 16, 32}) {
                if ((long) rowsT * d * r > SINGLE_THREAD_WORK && rowsT > 1) {
                    continue;
                }
                int[] cols = (long) d * r * rowsT <= SINGLE_THREAD_WORK ? new int[] {d, 1024} : new int[] {1024, 512};
                for (int tc : cols) {
                    if ((long) rowsT * tc * r > SINGLE_THREAD_WORK) {
                        continue;
                    }
                    long[] t = Probes.times(() -> {
                        deltaAll(d, r, rowsT, tc, ap, bp);
                        deltaAll(d, r, rowsT, tc, ap, bp);
                    }, reps);
                    out.printf("  delta x2 by sgemm tiles %d x %d: %.3f ms%n", rowsT, tc, Probes.medianMs(t));
                }
            }
        }
        // The raw pointers above do not keep their arrays' native memory alive; these references do.
        Reference.reachabilityFence(w);
        Reference.reachabilityFence(a);
        Reference.reachabilityFence(b);
    }

    /** Δ for all rows, split between the calling thread and one pool thread. */
    static void deltaAll(int d, int r, int rowsT, int tc, FloatPointer ap, FloatPointer bp) {
        int parts = 2;
        ForkJoinTask<?>[] f = new ForkJoinTask<?>[parts - 1];
        for (int c = 1; c < parts; c++) {
            int cc = c;
            f[c - 1] = ForkJoinPool.commonPool().submit(() -> chunk(d, r, rowsT, tc, ap, bp, d * cc / parts,
                    d * (cc + 1) / parts));
        }
        chunk(d, r, rowsT, tc, ap, bp, 0, d / parts);
        for (ForkJoinTask<?> x : f) {
            x.join();
        }
    }

    /** Δ rows {@code from..to} in tiles of {@code rowsT × tc}, each copied into a Java array as the pass would read it. */
    static void chunk(int d, int r, int rowsT, int tc, FloatPointer ap, FloatPointer bp, int from, int to) {
        FloatPointer c = SCRATCH.get();
        float[] j = JAVA.get();
        FloatPointer bq = new FloatPointer(bp);
        FloatPointer aq = new FloatPointer(ap);
        for (int i = from; i < to; i += rowsT) {
            int m = Math.min(rowsT, to - i);
            for (int c0 = 0; c0 < d; c0 += tc) {
                int n = Math.min(tc, d - c0);
                // Δ tile = s B[i.., :] A[:, c0..]   [m, n]
                openblas_nolapack.cblas_sgemm(101, 111, 111, m, n, r, 0.5f, bq.position((long) i * r), r,
                        aq.position(c0), d, 0f, c, n);
                c.position(0).get(j, 0, m * n);
            }
        }
    }
}
