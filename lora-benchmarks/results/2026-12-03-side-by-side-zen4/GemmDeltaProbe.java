package io.github.lora4j;

import java.util.Arrays;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Δ = s·B·A by single-threaded tile sgemm on two Java threads, against the EXACT pair and a bare gemm. */
public class GemmDeltaProbe {
    static double median(long[] t) { long[] c = t.clone(); Arrays.sort(c); return c[c.length / 2] / 1e6; }

    public static void main(String[] args) throws Exception {
        int d = Integer.parseInt(args[0]);
        int r = Integer.parseInt(args[1]);
        int reps = Integer.parseInt(args[2]);
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
                openblas_nolapack.cblas_sgemm(101, 111, 111, d, d, r, 0.5f, bp, r, ap, d, 1f, wp, d);
                openblas_nolapack.cblas_sgemm(101, 111, 111, d, d, r, -0.5f, bp, r, ap, d, 1f, wp, d);
                fast[q] = System.nanoTime() - t0;
            }
            System.out.printf("d=%d r=%d exact pair %.3f ms, fast pair %.3f ms%n", d, r, median(exact), median(fast));
            for (int rowsT : new int[] {1, 2, 4, 8, 16, 32}) {
                if ((long) rowsT * d * r > 262144 && rowsT > 1) continue;
                int[] cols = (long) d * r * rowsT <= 262144 ? new int[] {d, 1024} : new int[] {1024, 512};
                for (int tc : cols) {
                    if ((long) rowsT * tc * r > 262144) continue;
                    long[] t = new long[reps];
                    for (int q = 0; q < reps; q++) {
                        long t0 = System.nanoTime();
                        deltaAll(d, r, rowsT, tc, ap, bp);
                        deltaAll(d, r, rowsT, tc, ap, bp);
                        t[q] = System.nanoTime() - t0;
                    }
                    System.out.printf("  delta x2 by sgemm tiles %d x %d: %.3f ms%n", rowsT, tc, median(t));
                }
            }
        }
    }

    static final ThreadLocal<FloatPointer> SCRATCH = ThreadLocal.withInitial(() -> new FloatPointer(262144));
    static final ThreadLocal<float[]> JAVA = ThreadLocal.withInitial(() -> new float[262144]);

    static void deltaAll(int d, int r, int rowsT, int tc, FloatPointer ap, FloatPointer bp) {
        int parts = 2;
        ForkJoinTask<?>[] f = new ForkJoinTask<?>[parts - 1];
        for (int c = 1; c < parts; c++) {
            int cc = c;
            f[c - 1] = ForkJoinPool.commonPool().submit(() -> chunk(d, r, rowsT, tc, ap, bp, d * cc / parts, d * (cc + 1) / parts));
        }
        chunk(d, r, rowsT, tc, ap, bp, 0, d / parts);
        for (ForkJoinTask<?> x : f) x.join();
    }

    static void chunk(int d, int r, int rowsT, int tc, FloatPointer ap, FloatPointer bp, int from, int to) {
        FloatPointer c = SCRATCH.get();
        float[] j = JAVA.get();
        FloatPointer bq = new FloatPointer(bp);
        FloatPointer aq = new FloatPointer(ap);
        for (int i = from; i < to; i += rowsT) {
            int m = Math.min(rowsT, to - i);
            for (int c0 = 0; c0 < d; c0 += tc) {
                int n = Math.min(tc, d - c0);
                openblas_nolapack.cblas_sgemm(101, 111, 111, m, n, r, 0.5f, bq.position((long) i * r), r,
                        aq.position(c0), d, 0f, c, n);
                c.position(0).get(j, 0, m * n);
            }
        }
    }
}
