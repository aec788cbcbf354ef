package io.github.lora4j;

import io.github.lora4j.Kernels.Block;
import io.github.lora4j.benchmarks.probes.Probes;
import java.io.PrintStream;
import java.nio.FloatBuffer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What it shows: where the time of the mixed batch's ROWS path goes per row (issue 28's 1024², r = 8, n = K = 1,000
 * case), component by component, float32, each timed alone over {@code n} rows with {@code n} distinct adapters
 * ({@code A [r, d]}, {@code B [d, r]}, separate ND4J arrays as a layer holds them):
 * <ol>
 *   <li>{@code resolve}: the host pointers of every used adapter's A and B ({@code Block.of}, ND4J's
 *       {@code addressPointer()}), once per adapter and batch;</li>
 *   <li>{@code first gemv} {@code u = x_i A_iᵀ} alone, {@code second gemv} {@code y_i += s u B_iᵀ} alone, and the
 *       pair, through the block gemm the ROWS path calls (distinct adapters: weights from memory);</li>
 *   <li>{@code pair, one adapter}: the same with one adapter for every row (weights from cache): the calls and
 *       arithmetic without the memory traffic;</li>
 *   <li>{@code raw cblas}: the pair straight through cblas on pointer objects made before timing, distinct and one
 *       adapter: the native floor (JNI + OpenBLAS) without lora4j's Java work;</li>
 *   <li>{@code touch}: reading every adapter's {@code r·2d} floats once with one sdot each (a streaming floor);</li>
 *   <li>three experiments on the row order and the cores: the pair with the adapters in a shuffled order (as the
 *       benchmark's requests), the same rows visited in the order of their adapters' addresses, with a helper thread
 *       reading the next rows' adapters ahead (a software prefetch), right after a threaded gemm (OpenBLAS's workers
 *       still spinning), and split over two threads;</li>
 *   <li>alternatives for the second product: sgemm with one row, and {@code r} strided saxpy;</li>
 *   <li>{@code layer}: the whole layer, one adapter vs n distinct (ROWS forced), and base rows only.</li>
 * </ol>
 * Its runs: {@code lora-benchmarks/results/2026-12-05-many-adapters-2/profile.txt}.
 * Medians of {@code reps} timings each.
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.MixedRowsProfileProbe 1024 1000 8 15
 * </pre>
 * Arguments: {@code d}, {@code n} (rows and distinct adapters), {@code r}, {@code reps}. In package
 * {@code io.github.lora4j} for the package-private seam.
 */
public final class MixedRowsProfileProbe {

    private MixedRowsProfileProbe() {
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
        int d = Probes.positive("MixedRowsProfileProbe", args, 0, "d", 1024);
        int n = Probes.positive("MixedRowsProfileProbe", args, 1, "n", 1000);
        int r = Probes.positive("MixedRowsProfileProbe", args, 2, "r", 8);
        int reps = Probes.positive("MixedRowsProfileProbe", args, 3, "reps", 15);
        DataType f = DataType.FLOAT;
        Nd4j.getRandom().setSeed(1);
        INDArray[] as = new INDArray[n];
        INDArray[] bs = new INDArray[n];
        Block[] ba = new Block[n];
        Block[] bb = new Block[n];
        FloatPointer[] pa = new FloatPointer[n];
        FloatPointer[] pb = new FloatPointer[n];
        for (int k = 0; k < n; k++) {
            as[k] = Nd4j.rand(f, r, d);
            bs[k] = Nd4j.rand(f, d, r).muli(1e-3);
            ba[k] = Block.of(as[k]);
            bb[k] = Block.of(bs[k]);
            pa[k] = new FloatPointer(as[k].data().addressPointer());
            pb[k] = new FloatPointer(bs[k].data().addressPointer());
        }
        INDArray x = Nd4j.rand(f, n, d);
        INDArray y = Nd4j.create(f, n, d);
        INDArray u = Nd4j.create(f, n, r);
        Block xb = Block.of(x);
        Block yb = Block.of(y);
        Block ub = Block.of(u);
        FloatPointer[] px = new FloatPointer[n];
        FloatPointer[] py = new FloatPointer[n];
        FloatPointer[] pu = new FloatPointer[n];
        for (int i = 0; i < n; i++) {
            px[i] = new FloatPointer(x.data().addressPointer()).position((long) i * d);
            py[i] = new FloatPointer(y.data().addressPointer()).position((long) i * d);
            pu[i] = new FloatPointer(u.data().addressPointer()).position((long) i * r);
        }
        Block[] sink = new Block[1];
        double resolve = Probes.medianMs(() -> {
            for (int k = 0; k < n; k++) {
                sink[0] = Block.of(as[k]);
                sink[0] = Block.of(bs[k]);
            }
        }, reps);
        double first = Probes.medianMs(() -> {
            for (int i = 0; i < n; i++) {
                Kernels.gemm(xb.rows(i, 1), false, ba[i], true, ub.rows(i, 1), 1.0, 0.0);
            }
        }, reps);
        double second = Probes.medianMs(() -> {
            for (int i = 0; i < n; i++) {
                Kernels.gemm(ub.rows(i, 1), false, bb[i], true, yb.rows(i, 1), 0.5, 1.0);
            }
        }, reps);
        double pair = Probes.medianMs(() -> pairs(xb, yb, ub, ba, bb, n, n), reps);
        double pairOne = Probes.medianMs(() -> pairs(xb, yb, ub, ba, bb, n, 1), reps);
        double raw = Probes.medianMs(() -> raw(px, py, pu, pa, pb, n, n, d, r), reps);
        double rawOne = Probes.medianMs(() -> raw(px, py, pu, pa, pb, n, 1, d, r), reps);
        double[] acc = new double[1];
        double touch = Probes.medianMs(() -> {
            for (int k = 0; k < n; k++) {
                acc[0] += openblas_nolapack.cblas_sdot(r * d, pa[k], 1, pa[k], 1)
                        + openblas_nolapack.cblas_sdot(r * d, pb[k], 1, pb[k], 1);
            }
        }, reps);
        FloatPointer[][] pbCol = new FloatPointer[n][r];
        for (int k = 0; k < n; k++) {
            for (int j = 0; j < r; j++) {
                pbCol[k][j] = new FloatPointer(bs[k].data().addressPointer()).position(j);
            }
        }
        float[] uj = new float[r];
        double secondGemm = Probes.medianMs(() -> {
            for (int i = 0; i < n; i++) {
                openblas_nolapack.cblas_sgemm(openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans,
                        openblas_nolapack.CblasTrans, 1, d, r, 0.5f, pu[i], r, pb[i], r, 1f, py[i], d);
            }
        }, reps);
        FloatBuffer ubuf = u.data().asNioFloat();
        double secondAxpy = Probes.medianMs(() -> {
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < r; j++) {
                    openblas_nolapack.cblas_saxpy(d, 0.5f * ubuf.get(i * r + j), pbCol[i][j], r, py[i], 1);
                }
            }
        }, reps);
        double secondRaw = Probes.medianMs(() -> {
            for (int i = 0; i < n; i++) {
                openblas_nolapack.cblas_sgemv(openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans, d, r,
                        0.5f, pb[i], r, pu[i], 1, 1f, py[i], 1);
            }
        }, reps);
        INDArray w = Nd4j.rand(f, d, d);
        INDArray yBase = Nd4j.create(f, n, d);
        long[] afterGemm = new long[reps];
        long[] split = new long[reps];
        long[] splitAfterGemm = new long[reps];
        java.util.concurrent.ExecutorService helper = java.util.concurrent.Executors.newSingleThreadExecutor(job -> {
            Thread th = new Thread(job, "rows-helper");
            th.setDaemon(true);
            return th;
        });
        try {
            for (int rep = -3; rep < reps; rep++) {
                Kernels.gemm(x, w, yBase, false, true, 1.0, 0.0);
                long t0 = System.nanoTime();
                pairs(xb, yb, ub, ba, bb, n, n);
                long t1 = System.nanoTime();
                Kernels.gemm(x, w, yBase, false, true, 1.0, 0.0);
                long t2 = System.nanoTime();
                halves(helper, xb, yb, ub, ba, bb, n);
                long t3 = System.nanoTime();
                try {
                    Thread.sleep(300);        // OpenBLAS's workers go to sleep
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                long t4 = System.nanoTime();
                halves(helper, xb, yb, ub, ba, bb, n);
                long t5 = System.nanoTime();
                if (rep >= 0) {
                    afterGemm[rep] = t1 - t0;
                    splitAfterGemm[rep] = t3 - t2;
                    split[rep] = t5 - t4;
                }
            }
        } finally {
            helper.shutdown();
        }
        // Rows in a shuffled order of adapters (as the benchmark's requests), and the same rows visited in the order of
        // their adapters' addresses.
        int[] perm = new int[n];
        for (int k = 0; k < n; k++) {
            perm[(int) ((k * 7919L) % n)] = k;
        }
        Block[] sa = new Block[n];
        Block[] sb = new Block[n];
        for (int i = 0; i < n; i++) {
            sa[i] = ba[perm[i]];
            sb[i] = bb[perm[i]];
        }
        Integer[] byAddress = new Integer[n];
        for (int i = 0; i < n; i++) {
            byAddress[i] = i;
        }
        java.util.Arrays.sort(byAddress, java.util.Comparator.comparingLong(i -> sa[i].host().address()));
        double shuffled = Probes.medianMs(() -> pairs(xb, yb, ub, sa, sb, n, n), reps);
        double sorted = Probes.medianMs(() -> {
            for (Integer boxed : byAddress) {
                int i = boxed;
                Block ui = ub.rows(i, 1);
                Kernels.gemm(xb.rows(i, 1), false, sa[i], true, ui, 1.0, 0.0);
                Kernels.gemm(ui, false, sb[i], true, yb.rows(i, 1), 0.5, 1.0);
            }
        }, reps);
        // Prefetch experiment: a helper thread reads one float per cache line of the adapters of the next rows while
        // this thread computes the current one (shuffled order, as above).
        FloatBuffer[] fa = new FloatBuffer[n];
        FloatBuffer[] fb = new FloatBuffer[n];
        for (int i = 0; i < n; i++) {
            fa[i] = new FloatPointer(sa[i].host()).capacity((long) r * d).asBuffer();
            fb[i] = new FloatPointer(sb[i].host()).capacity((long) r * d).asBuffer();
        }
        long[] prefetched = new long[reps];
        for (int rep = -3; rep < reps; rep++) {
            java.util.concurrent.atomic.AtomicInteger at = new java.util.concurrent.atomic.AtomicInteger(-1);
            float[] sinkF = new float[1];
            Thread pre = new Thread(() -> {
                float sum = 0;
                for (int i = 0; i < n; i++) {
                    while (i > at.get() + 2) {
                        Thread.onSpinWait();
                    }
                    for (int j = 0; j < r * d; j += 16) {
                        sum += fa[i].get(j) + fb[i].get(j);
                    }
                }
                sinkF[0] = sum;
            });
            long t0 = System.nanoTime();
            pre.start();
            for (int i = 0; i < n; i++) {
                at.set(i);
                Block ui = ub.rows(i, 1);
                Kernels.gemm(xb.rows(i, 1), false, sa[i], true, ui, 1.0, 0.0);
                Kernels.gemm(ui, false, sb[i], true, yb.rows(i, 1), 0.5, 1.0);
            }
            long t1 = System.nanoTime();
            try {
                pre.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            if (rep >= 0) {
                prefetched[rep] = t1 - t0;
            }
        }
        double perRow = 1e3 / n;
        out.printf("pair, shuffled, with a prefetching helper thread %.2f us per row%n",
                Probes.medianMs(prefetched) * perRow);
        out.printf("pair, adapters in shuffled order %.2f us per row | the same rows in adapter address order %.2f%n",
                shuffled * perRow, sorted * perRow);
        out.printf("pair right after a threaded gemm %.2f us per row | rows split over 2 threads: %.2f, right after a gemm "
                + "%.2f%n", Probes.medianMs(afterGemm) * perRow, Probes.medianMs(split) * perRow,
                Probes.medianMs(splitAfterGemm) * perRow);
        out.printf("second product alternatives, us per row: raw sgemv %.2f | sgemm m=1 %.2f | %d strided saxpy %.2f%n",
                secondRaw * perRow, secondGemm * perRow, r, secondAxpy * perRow);
        out.printf("d=%d n=K=%d r=%d, us per row: resolve %.2f | first gemv %.2f | second gemv %.2f | pair %.2f"
                        + " | pair, one adapter %.2f | raw cblas pair %.2f | raw, one adapter %.2f | touch %.2f%n",
                d, n, r, resolve * perRow, first * perRow, second * perRow, pair * perRow, pairOne * perRow,
                raw * perRow, rawOne * perRow, touch * perRow);

        LoraLinear layer = LoraLinear.wrap(Nd4j.rand(f, d, d).subi(0.5).muli(1 / Math.sqrt(d)), null,
                LoraConfig.builder().rank(r).alpha(r).build());
        String[] per = new String[n];
        String[] one = new String[n];
        String[] none = new String[n];
        for (int k = 0; k < n; k++) {
            String name = "t" + k;
            layer.addAdapter(name, LoraConfig.builder().rank(r).alpha(r).build());
            layer.setAdapterWeights(name, as[k], bs[k]);
            per[(int) ((k * 7919L) % n)] = name;
            one[k] = "t0";
        }
        double[] t = new double[3];
        long[][] samples = new long[3][reps];
        for (int rep = -3; rep < reps; rep++) {
            for (int v = 0; v < 3; v++) {
                String[] rows = v == 0 ? one : v == 1 ? per : none;
                MixedBatch.forced = v == 1 ? MixedBatch.Strategy.ROWS : null;
                long t0 = System.nanoTime();
                layer.forward(x, rows);
                long dt = System.nanoTime() - t0;
                MixedBatch.forced = null;
                if (rep >= 0) {
                    samples[v][rep] = dt;
                }
            }
        }
        for (int v = 0; v < 3; v++) {
            t[v] = Probes.medianMs(samples[v]);
        }
        out.printf("layer ms: one adapter %.2f | n distinct (ROWS) %.2f | base rows only %.2f | extra per row %.2f us%n",
                t[0], t[1], t[2], (t[1] - t[0]) * perRow);
    }

    /** Row {@code i} with adapter {@code i mod k} through the block gemm, as the ROWS path. */
    private static void pairs(Block x, Block y, Block u, Block[] a, Block[] b, int n, int k) {
        for (int i = 0; i < n; i++) {
            Block ui = u.rows(i, 1);
            Kernels.gemm(x.rows(i, 1), false, a[i % k], true, ui, 1.0, 0.0);
            Kernels.gemm(ui, false, b[i % k], true, y.rows(i, 1), 0.5, 1.0);
        }
    }

    /** {@link #pairs} with the first half of the rows on a helper thread, the second on this one. */
    private static void halves(java.util.concurrent.ExecutorService helper, Block x, Block y, Block u, Block[] a,
                               Block[] b, int n) {
        int h = n / 2;
        java.util.concurrent.Future<?> f = helper.submit(() -> {
            for (int i = 0; i < h; i++) {
                Block ui = u.rows(i, 1);
                Kernels.gemm(x.rows(i, 1), false, a[i], true, ui, 1.0, 0.0);
                Kernels.gemm(ui, false, b[i], true, y.rows(i, 1), 0.5, 1.0);
            }
        });
        for (int i = h; i < n; i++) {
            Block ui = u.rows(i, 1);
            Kernels.gemm(x.rows(i, 1), false, a[i], true, ui, 1.0, 0.0);
            Kernels.gemm(ui, false, b[i], true, y.rows(i, 1), 0.5, 1.0);
        }
        try {
            f.get();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** The same pair straight through cblas on pointer objects made beforehand. */
    private static void raw(FloatPointer[] x, FloatPointer[] y, FloatPointer[] u, FloatPointer[] a, FloatPointer[] b,
                            int n, int k, int d, int r) {
        for (int i = 0; i < n; i++) {
            openblas_nolapack.cblas_sgemv(openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans, r, d, 1f,
                    a[i % k], d, x[i], 1, 0f, u[i], 1);
            openblas_nolapack.cblas_sgemv(openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans, d, r, 0.5f,
                    b[i % k], r, u[i], 1, 1f, y[i], 1);
        }
    }
}
