package io.github.lora4j;

import io.github.lora4j.Kernels.Block;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Batches whose rows use different adapters (PEFT's {@code adapter_names}, the multi-tenant batches of Punica and
 * S-LoRA): one base product {@code y = x Wᵀ + b} for all rows, then for each row {@code i} with adapter {@code a}
 * its own path {@code y_i += s_a·(x_i A_aᵀ) B_aᵀ}. Base rows (null or {@code __base__}) get the base output only.
 *
 * <h2>Three ways to add the paths</h2>
 * <ul>
 *   <li>{@link Strategy#ROWS} (Punica's BGMV): the rows in the order given; each maximal run of consecutive rows
 *       with the same adapter is one pair of products on that adapter's own buffers, {@code u = x_run A_aᵀ} and
 *       {@code y_run += s_a u B_aᵀ} (a single row: two gemv). Nothing is copied, no ND4J object is made: the
 *       {@link Kernels#gemm(Block, boolean, Block, boolean, Block, double, double) block gemm} takes host pointers at
 *       offsets. Its cost follows the rows: two calls and one read of the adapter's {@code r·(in + out)} weights per
 *       run, whatever the number of distinct adapters.</li>
 *   <li>{@link Strategy#SEGMENTED} (Punica's SGMV): the adapted rows gathered into one contiguous segment per adapter
 *       (a copy), one pair of products per adapter (each adapter's weights read once, however many rows use it),
 *       and each row's update added back into its own output row.</li>
 *   <li>{@link Strategy#STACKED}: every used adapter at once, {@code A_cat [R, in]} and {@code B_cat [out, R]} for
 *       the total rank {@code R}; {@code u = x A_catᵀ} projects each row onto every adapter, a mask keeps (times
 *       {@code s_a}) the row's own columns, {@code y += u B_catᵀ}. Three calls for any number of adapters, but
 *       {@code 2·n·R·(in + out)} flops: only worth it while {@code R} is small.</li>
 * </ul>
 * A batch whose rows all use one adapter is exactly {@code forward(x)} with it (bitwise); a batch without adapted
 * rows, the base output.
 *
 * <h2>The cost model</h2>
 * {@link #choose} estimates each strategy's time beside the (shared) base product and takes the cheapest; the
 * constants below were measured on the development machine (2 cores, float32, OpenBLAS 0.3.19 of nd4j-native; see
 * {@code docs/many-adapters.md}). Per strategy, with {@code c} the cost of one call, {@code w} the bytes per element
 * and {@code bytes_a = r_a·(in + out)·w}:
 * <pre>
 * ROWS       2·c·runs + Σ_a [bytes_a / STREAM + (runs_a − 1)·bytes_a / CACHED] + flops / SMALL_GEMM
 * SEGMENTED  2·c·K + Σ_a bytes_a / STREAM + flops / SMALL_GEMM
 *            + M·(2·in + 3·out)·w / COPY + 2·M·ROW_COPY                 (gather x, add the updates back)
 * STACKED    3·c + 2·n·R·(in + out) / GEMM + 2·n·R·w / COPY (+ R·(in + out)·w·2 / COPY to rebuild A_cat, B_cat)
 * </pre>
 * with {@code flops = 2·Σ_i r_{a(i)}·(in + out)} over the {@code M} adapted rows, {@code K} distinct adapters and
 * {@code runs_a} runs of adapter {@code a}. On the ND4J fallback route a call costs {@link #FALLBACK_CALL_NS} (op
 * dispatch and views), which makes per-row work dear there and moves the choice to SEGMENTED or STACKED.
 *
 * <h2>Training</h2>
 * In training mode ({@link #train}) rows are put in adapter order (a gather, skipped when they already are), the base
 * product runs once for all rows, and each adapter runs the ordinary single-adapter {@link LoraPath} on its own
 * contiguous block of rows, with its own dropout stream: so each adapter gets exactly the forward, dropout masks and
 * gradients it would get trained alone on its rows, and {@link Trained#backward} adds each adapter's gradients from
 * its own rows only.
 *
 * <p>Holds the stacked A and B of the last stacked batch until {@link #invalidate()}, and per adapter of the last
 * training batch its path scratch.
 */
final class MixedBatch {

    /** How a batch adds its rows' LoRA paths; see the class comment. */
    enum Strategy {
        /** One pair of products per run of consecutive rows sharing an adapter (per row when they alternate). */
        ROWS,
        /** Rows gathered per adapter, one pair of products per adapter, updates added back. */
        SEGMENTED,
        /** All used adapters stacked: three products for any number of adapters. */
        STACKED
    }

    // ---------------------------------------------------------------- cost model constants (see the class comment)

    /** One BLAS call on the direct route, ns: JNI, the pointer objects, OpenBLAS's dispatch. */
    static final double CALL_NS = 700;
    /** One product on the ND4J fallback route, ns: op dispatch and the operand views. */
    static final double FALLBACK_CALL_NS = 25_000;
    /** Adapter weights read for the first time in a batch (from memory), bytes per ns. */
    static final double STREAM_BYTES_PER_NS = 14;
    /** Adapter weights read again within the same batch (from cache), bytes per ns. */
    static final double CACHED_BYTES_PER_NS = 40;
    /** The thin products of one adapter's path (rank r), flops per ns. */
    static final double SMALL_GEMM_FLOPS_PER_NS = 16;
    /** The stacked path's large products, flops per ns. */
    static final double GEMM_FLOPS_PER_NS = 80;
    /** Row copies and the stacked mask, bytes per ns. */
    static final double COPY_BYTES_PER_NS = 10;
    /** One row copied or added (one BLAS call), ns. */
    static final double ROW_COPY_NS = 150;

    /**
     * Largest {@code n·R} the stacked strategy takes: its mask and {@code u} hold that many elements (32 MiB of mask
     * at this bound), and it is never the cheapest near it.
     */
    static final long STACKED_MAX_ELEMENTS = 1L << 22;

    /** Test switch: when set, every batch with more than one path takes this strategy. */
    static volatile Strategy forced;

    /** What the layer's base product is: {@code y = x W^T + b} into {@code y}. */
    interface Base {
        void product(INDArray x, INDArray y);
    }

    /** What the layer's input gradient through W is: {@code dx = g W} into {@code dx}. */
    interface InputGradient {
        void product(INDArray g, INDArray dx);
    }

    /** Used adapters (in order of first use) with their A stacked by rows {@code [R, in]} and B by columns {@code [out, R]}. */
    private record StackedAdapters(List<LoraAdapter> adapters, INDArray a, INDArray b) {
    }

    /**
     * The stacked A and B of the adapters of the last stacked mixed batch; every exclusive operation of the layer
     * (adapter changes, weight updates, merges) drops it, so it never outlives the arrays it was copied from.
     */
    private volatile StackedAdapters stacked;

    /** Each adapter of the last training batch → the scratch its path used (guarded by itself). */
    private final Map<LoraAdapter, LoraPath.Scratch> trainingScratch = new IdentityHashMap<>();

    /** Drops the stacked arrays; the layer calls this under its exclusive lock. */
    void invalidate() {
        stacked = null;
    }

    // ---------------------------------------------------------------- the plan of a batch

    /**
     * A batch resolved against the layer's adapters: each row's adapter as an index into {@code used} (the distinct
     * adapters in order of first use), or -1 for a base row; rows and runs per adapter.
     */
    static final class Plan {
        final int n;
        final LoraAdapter[] used;
        final int[] adapterOfRow;
        final int[] rowCount;
        final int[] runCount;
        final int adaptedRows;
        final int runs;
        final int totalRank;
        final int maxRank;
        final int maxRows;
        /** {@code Σ_i r_{a(i)}} over the adapted rows. */
        final long rankRows;

        private Plan(int n, LoraAdapter[] used, int[] adapterOfRow) {
            this.n = n;
            this.used = used;
            this.adapterOfRow = adapterOfRow;
            this.rowCount = new int[used.length];
            this.runCount = new int[used.length];
            int adapted = 0;
            int runs = 0;
            long rankRows = 0;
            int previous = -1;
            for (int i = 0; i < n; i++) {
                int k = adapterOfRow[i];
                if (k >= 0) {
                    rowCount[k]++;
                    adapted++;
                    rankRows += used[k].rank();
                    if (k != previous) {
                        runCount[k]++;
                        runs++;
                    }
                }
                previous = k;
            }
            int total = 0;
            int maxR = 0;
            int maxM = 0;
            for (int k = 0; k < used.length; k++) {
                total += used[k].rank();
                maxR = Math.max(maxR, used[k].rank());
                maxM = Math.max(maxM, rowCount[k]);
            }
            this.adaptedRows = adapted;
            this.runs = runs;
            this.totalRank = total;
            this.maxRank = maxR;
            this.maxRows = maxM;
            this.rankRows = rankRows;
        }

        /** Indices of the adapted rows grouped by adapter (in {@code used} order), ascending within each adapter. */
        int[] adaptedRowsByAdapter() {
            int[] start = new int[used.length];
            for (int k = 1; k < used.length; k++) {
                start[k] = start[k - 1] + rowCount[k - 1];
            }
            int[] rows = new int[adaptedRows];
            for (int i = 0; i < n; i++) {
                int k = adapterOfRow[i];
                if (k >= 0) {
                    rows[start[k]++] = i;
                }
            }
            return rows;
        }
    }

    /**
     * Resolves {@code adapterPerRow} (one name per row; null or {@link LoraLinear#BASE_MODEL} for the base layer);
     * with adapters disabled every row is a base row.
     *
     * @throws IllegalArgumentException for a wrong length or an unknown name, naming the row
     */
    static Plan plan(String[] adapterPerRow, int n, AdapterSet adapters, boolean enabled) {
        if (adapterPerRow.length != n) {
            throw new IllegalArgumentException("adapterPerRow: expected one name per row, " + n + " rows, got "
                    + adapterPerRow.length + " names");
        }
        Map<String, Integer> index = new HashMap<>();
        List<LoraAdapter> used = new ArrayList<>();
        int[] adapterOfRow = new int[n];
        for (int i = 0; i < n; i++) {
            String name = adapterPerRow[i];
            if (name == null || name.equals(LoraLinear.BASE_MODEL)) {
                adapterOfRow[i] = -1;
                continue;
            }
            Integer k = index.get(name);
            if (k == null) {
                LoraAdapter a = adapters.get(name);
                if (a == null) {
                    throw new IllegalArgumentException("adapterPerRow[" + i + "]: unknown adapter '" + name
                            + "'; known adapters: " + adapters.names() + " (or null / " + LoraLinear.BASE_MODEL + ")");
                }
                k = used.size();
                index.put(name, k);
                used.add(a);
            }
            adapterOfRow[i] = k;
        }
        if (!enabled) {
            Arrays.fill(adapterOfRow, -1);
            used.clear();
        }
        return new Plan(n, used.toArray(new LoraAdapter[0]), adapterOfRow);
    }

    /** The estimated time in ns of adding the batch's paths by {@code strategy}; see the class comment. */
    static double cost(Strategy strategy, Plan p, long in, long out, int width, boolean direct, boolean stackCached) {
        double call = direct ? CALL_NS : FALLBACK_CALL_NS;
        switch (strategy) {
            case ROWS: {
                // Per run of m rows: two gemms, or for m <= 2 two gemvs per row (cut into pieces on the direct route).
                // The adapter's weights stream in on its first run and come from cache on later ones; the rows beyond
                // the first of a run add their flops.
                double t = 0;
                boolean[] seen = new boolean[p.used.length];
                for (int i = 0; i < p.n; ) {
                    int k = p.adapterOfRow[i];
                    int j = runEnd(p, i);
                    if (k >= 0) {
                        LoraAdapter a = p.used[k];
                        t += call * calls(j - i, a.rank(), in, out, direct) + weights(a, in, out, width, seen[k])
                                + 2.0 * (j - i - 1) * a.rank() * (in + out) / SMALL_GEMM_FLOPS_PER_NS;
                        seen[k] = true;
                    }
                    i = j;
                }
                return t;
            }
            case SEGMENTED: {
                // Gather the adapted rows, one pair of products per adapter, add the updates back.
                long m = p.adaptedRows;
                double t = (double) m * (in + 2 * out) * width / COPY_BYTES_PER_NS
                        + (direct ? 2.0 * m * ROW_COPY_NS : 4 * call);
                for (int k = 0; k < p.used.length; k++) {
                    LoraAdapter a = p.used[k];
                    t += call * calls(p.rowCount[k], a.rank(), in, out, direct) + weights(a, in, out, width, false)
                            + 2.0 * (p.rowCount[k] - 1) * a.rank() * (in + out) / SMALL_GEMM_FLOPS_PER_NS;
                }
                return t;
            }
            default: {
                // Three products over all rows and the total rank R, the mask over [n, R], and A_cat, B_cat rebuilt
                // unless the last stacked batch used the same adapters.
                double t = 3 * call + 2.0 * p.n * p.totalRank * (in + out) / GEMM_FLOPS_PER_NS
                        + 2.0 * p.n * p.totalRank * width / COPY_BYTES_PER_NS;
                return stackCached ? t : t + 2 * call + 2.0 * p.totalRank * (in + out) * width / COPY_BYTES_PER_NS;
            }
        }
    }

    /** BLAS calls of one adapter's pair of products over {@code m} rows (see {@code Kernels.gemm} on blocks). */
    private static double calls(int m, int r, long in, long out, boolean direct) {
        if (m > 2 || !direct) {
            return 2;
        }
        return m * (Kernels.gemvPieces(r, in) + Kernels.gemvPieces(out, r));
    }

    /** Time to read an adapter's A and B: from memory on first use in the batch, else from cache. */
    private static double weights(LoraAdapter a, long in, long out, int width, boolean cached) {
        double bytes = (double) a.rank() * (in + out) * width;
        return bytes / (cached ? CACHED_BYTES_PER_NS : STREAM_BYTES_PER_NS);
    }

    /** The cheapest strategy by {@link #cost}, unless a test forced one. */
    static Strategy choose(Plan p, long in, long out, int width, boolean direct, boolean stackCached) {
        Strategy f = forced;
        if (f != null) {
            return f;
        }
        Strategy best = Strategy.ROWS;
        double bestCost = cost(best, p, in, out, width, direct, stackCached);
        for (Strategy s : new Strategy[] {Strategy.SEGMENTED, Strategy.STACKED}) {
            if (s == Strategy.STACKED && (long) p.n * p.totalRank > STACKED_MAX_ELEMENTS) {
                continue;
            }
            double c = cost(s, p, in, out, width, direct, stackCached);
            if (c < bestCost) {
                best = s;
                bestCost = c;
            }
        }
        return best;
    }

    // ---------------------------------------------------------------- inference

    /**
     * Row {@code i} of {@code input [..., in]} (leading dimensions folded into rows) with adapter
     * {@code adapterPerRow[i]} (null or the base-model name: the base layer); with adapters disabled every row gets
     * the base output. Returns a new {@code [..., out]}.
     */
    INDArray forward(INDArray input, String[] adapterPerRow, AdapterSet adapters, Base base, LoraPath.Scratch scratch,
                     long out) {
        long in = input.size(-1);
        long[] outputShape = Kernels.withLast(input.shape(), out);
        INDArray x = rowMajor(Kernels.fold(input, in));
        int n = Math.toIntExact(x.rows());
        Plan p = plan(adapterPerRow, n, adapters, adapters.enabled());
        DataType type = x.dataType();
        if (n == 0) {
            return Nd4j.create(type, outputShape);
        }
        INDArray y = Nd4j.createUninitialized(type, n, out);
        base.product(x, y);                                                   // y = x W^T + b      [n, out]
        if (p.used.length == 1 && p.adaptedRows == n) {
            // One path for every row: exactly what forward(x) computes with that adapter.
            LoraPath.forward(p.used[0], x, y, false, scratch);
        } else if (p.used.length > 0) {
            StackedAdapters stack = stacked;
            boolean cached = stack != null && stack.adapters().equals(Arrays.asList(p.used));
            switch (choose(p, in, out, type.width(), Kernels.direct(), cached)) {
                case ROWS -> rows(p, Block.of(x), Block.of(y), scratch, type);
                case SEGMENTED -> segmented(p, Block.of(x), Block.of(y), scratch, type, in, out);
                default -> stacked(p, x, y, scratch);
            }
        }
        return y.reshape('c', outputShape);
    }

    /** {@code x} itself when its elements lie densely in row-major order, else a c-order copy. */
    private static INDArray rowMajor(INDArray x) {
        return Kernels.rowMajorContiguous(x) ? x : x.dup('c');
    }

    /** ROWS: per run of rows sharing an adapter, {@code u = x_run A_aᵀ}, {@code y_run += s_a u B_aᵀ}, in place. */
    private static void rows(Plan p, Block x, Block y, LoraPath.Scratch scratch, DataType type) {
        Block[] a = new Block[p.used.length];
        Block[] b = new Block[p.used.length];
        int longestRun = 0;
        for (int i = 0; i < p.n; ) {
            int j = runEnd(p, i);
            longestRun = Math.max(longestRun, j - i);
            i = j;
        }
        Block u = Block.dense(scratch.flat(LoraPath.Scratch.MIXED_U, type, (long) longestRun * p.maxRank), 0,
                longestRun, p.maxRank);
        for (int i = 0; i < p.n; ) {
            int k = p.adapterOfRow[i];
            int j = runEnd(p, i);
            if (k >= 0) {
                LoraAdapter ad = p.used[k];
                if (a[k] == null) {
                    Block[] ab = ad.blocks();
                    a[k] = ab[0];
                    b[k] = ab[1];
                }
                Block ub = u.top(j - i, ad.rank());
                Kernels.gemm(x.rows(i, j - i), false, a[k], true, ub, 1.0, 0.0);              // u = x_run A^T       [m, r]
                Kernels.gemm(ub, false, b[k], true, y.rows(i, j - i), ad.scaling(), 1.0);     // y_run += s u B^T    [m, out]
            }
            i = j;
        }
    }

    /** The end (exclusive) of the run of rows from {@code i} that share row {@code i}'s adapter (or base). */
    private static int runEnd(Plan p, int i) {
        int j = i + 1;
        while (j < p.n && p.adapterOfRow[j] == p.adapterOfRow[i]) {
            j++;
        }
        return j;
    }

    /** SEGMENTED: adapted rows gathered per adapter, one pair of products per adapter, the updates added back. */
    private static void segmented(Plan p, Block x, Block y, LoraPath.Scratch scratch, DataType type, long in, long out) {
        int m = p.adaptedRows;
        int[] rows = p.adaptedRowsByAdapter();
        Block xs = Block.dense(scratch.flat(LoraPath.Scratch.GATHERED_X, type, m * in), 0, m, (int) in);
        Block ds = Block.dense(scratch.flat(LoraPath.Scratch.GATHERED_Y, type, m * out), 0, m, (int) out);
        Block u = Block.dense(scratch.flat(LoraPath.Scratch.MIXED_U, type, (long) p.maxRows * p.maxRank), 0,
                p.maxRows, p.maxRank);
        Kernels.gatherRows(x, rows, xs);                                                      // x_s = x[rows]
        int start = 0;
        for (int k = 0; k < p.used.length; k++) {
            LoraAdapter ad = p.used[k];
            int mk = p.rowCount[k];
            Block ub = u.top(mk, ad.rank());
            Block[] ab = ad.blocks();
            Kernels.gemm(xs.rows(start, mk), false, ab[0], true, ub, 1.0, 0.0);          // u = x_a A^T       [m_a, r]
            Kernels.gemm(ub, false, ab[1], true, ds.rows(start, mk), ad.scaling(), 0.0); // d_a = s u B^T     [m_a, out]
            start += mk;
        }
        Kernels.scatterRows(ds, rows, y, true);                                                         // y[rows] += d
    }

    /**
     * STACKED: {@code u = x A_catᵀ [n, R]}, each row's own columns kept (times its {@code s}) by a mask, then
     * {@code y += u B_catᵀ}. The stacked arrays are cached until the layer's next exclusive operation.
     */
    private void stacked(Plan p, INDArray x, INDArray y, LoraPath.Scratch scratch) {
        List<LoraAdapter> used = Arrays.asList(p.used);
        StackedAdapters stack = stacked;
        if (stack == null || !stack.adapters().equals(used)) {
            // Readers may race to build it; each builds the same arrays from the same (read-locked) adapters.
            INDArray[] as = new INDArray[p.used.length];
            INDArray[] bs = new INDArray[p.used.length];
            for (int g = 0; g < as.length; g++) {
                as[g] = p.used[g].a();
                bs[g] = p.used[g].b();
            }
            stack = new StackedAdapters(List.copyOf(used), Nd4j.concat(0, as), Nd4j.concat(1, bs));
            stacked = stack;
        }
        int total = p.totalRank;
        int[] offset = new int[p.used.length];
        for (int k = 1; k < offset.length; k++) {
            offset[k] = offset[k - 1] + p.used[k - 1].rank();
        }
        double[] mask = new double[Math.multiplyExact(p.n, total)];
        for (int i = 0; i < p.n; i++) {
            int k = p.adapterOfRow[i];
            if (k >= 0) {
                Arrays.fill(mask, i * total + offset[k], i * total + offset[k] + p.used[k].rank(), p.used[k].scaling());
            }
        }
        INDArray u = scratch.array(LoraPath.Scratch.U, x.dataType(), p.n, total);
        Kernels.gemm(x, stack.a(), u, false, true, 1.0, 0.0);     // u = x A_cat^T          [n, R]
        Kernels.multiply(u, mask);                                 // keep each row's own adapter, times its s
        Kernels.gemm(u, stack.b(), y, false, true, 1.0, 1.0);     // y += u B_cat^T         [n, out]
    }

    // ---------------------------------------------------------------- training

    /**
     * A training-mode mixed batch: its output, and what {@link #backward} needs (each adapter's path over its block
     * of the rows in adapter order, and that order).
     *
     * @param output      {@code [..., out]}, rows in the caller's order
     * @param paths       one path per used adapter, over rows {@code [starts[k], starts[k] + counts[k])} of the
     *                    batch in adapter order
     * @param starts      first row of each adapter's block, in adapter order
     * @param counts      rows of each adapter
     * @param order       row {@code j} of the batch in adapter order is row {@code order[j]} of the caller's; null
     *                    when the two orders are the same
     */
    record Trained(INDArray output, LoraPath[] paths, int[] starts, int[] counts, int[] order) {

        /** Whether {@code adapter}'s path ran in this batch. */
        boolean ran(LoraAdapter adapter) {
            for (LoraPath path : paths) {
                if (path.adapter() == adapter) {
                    return true;
                }
            }
            return false;
        }

        /** The adapters whose paths ran, in order of first use. */
        List<LoraAdapter> adapters() {
            List<LoraAdapter> out = new ArrayList<>(paths.length);
            for (LoraPath path : paths) {
                out.add(path.adapter());
            }
            return out;
        }

        /**
         * Back-propagates {@code g [n, out]} (rows in the caller's order): each adapter's gradients from its own rows
         * only ({@code dB_a += s_a g_aᵀ u_a}, {@code dA_a += s_a gB_aᵀ x_a}), and, when {@code inputGradient} is given,
         * returns {@code dx = g W + Σ_a s_a gB_a A_a} rows in the caller's order; else null.
         */
        INDArray backward(INDArray g, InputGradient inputGradient, long in) {
            DataType type = g.dataType();
            int n = Math.toIntExact(g.rows());
            INDArray gs = order == null ? rowMajor(g) : gather(rowMajor(g), order);
            INDArray dxs = null;
            if (inputGradient != null) {
                dxs = Nd4j.createUninitialized(type, n, in);
                inputGradient.product(gs, dxs);                                               // dx = g W         [n, in]
            }
            for (int k = 0; k < paths.length; k++) {
                paths[k].backward(block(gs, starts[k], counts[k]),
                        dxs == null ? null : block(dxs, starts[k], counts[k]));               // dB_a, dA_a; dx_a += s gB_a A_a
            }
            return dxs == null || order == null ? dxs : scatter(dxs, order);
        }
    }

    /**
     * The training forward of a mixed batch: rows put in adapter order (base rows first), the base product for all of
     * them, then per adapter its {@link LoraPath} (dropout from the adapter's own stream) over its block; the output
     * back in the caller's order.
     */
    Trained train(INDArray input, String[] adapterPerRow, AdapterSet adapters, Base base, long out) {
        long in = input.size(-1);
        long[] outputShape = Kernels.withLast(input.shape(), out);
        INDArray x = rowMajor(Kernels.fold(input, in));
        int n = Math.toIntExact(x.rows());
        Plan p = plan(adapterPerRow, n, adapters, adapters.enabled());
        DataType type = x.dataType();
        if (n == 0) {
            return new Trained(Nd4j.create(type, outputShape), new LoraPath[0], new int[0], new int[0], null);
        }
        int baseRows = n - p.adaptedRows;
        int[] order = new int[n];
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (p.adapterOfRow[i] < 0) {
                order[j++] = i;
            }
        }
        System.arraycopy(p.adaptedRowsByAdapter(), 0, order, baseRows, p.adaptedRows);
        boolean identity = true;
        for (int i = 0; i < n && identity; i++) {
            identity = order[i] == i;
        }
        INDArray xs = identity ? x : gather(x, order);
        INDArray ys = Nd4j.createUninitialized(type, n, out);
        base.product(xs, ys);                                                                 // y = x W^T + b    [n, out]
        LoraPath[] paths = new LoraPath[p.used.length];
        int[] starts = new int[p.used.length];
        int start = baseRows;
        synchronized (trainingScratch) {
            Map<LoraAdapter, LoraPath.Scratch> kept = new IdentityHashMap<>();
            for (int k = 0; k < p.used.length; k++) {
                LoraAdapter a = p.used[k];
                LoraPath.Scratch s = trainingScratch.get(a);
                kept.put(a, s == null ? new LoraPath.Scratch() : s);
            }
            trainingScratch.clear();
            trainingScratch.putAll(kept);
            for (int k = 0; k < p.used.length; k++) {
                starts[k] = start;
                paths[k] = LoraPath.forward(p.used[k], block(xs, start, p.rowCount[k]),
                        block(ys, start, p.rowCount[k]), true, kept.get(p.used[k]));          // y_a += s (drop(x_a) A^T) B^T
                start += p.rowCount[k];
            }
        }
        INDArray y = identity ? ys : scatter(ys, order);
        return new Trained(y.reshape('c', outputShape), paths, starts, p.rowCount, identity ? null : order);
    }

    /** Rows {@code [start, start + count)} of a c-order {@code [n, cols]} array: itself, or a row-block view. */
    private static INDArray block(INDArray a, int start, int count) {
        return start == 0 && count == a.rows() ? a : a.get(NDArrayIndex.interval(start, start + count), NDArrayIndex.all());
    }

    /** A new c-order array whose row {@code j} is row {@code order[j]} of {@code a}. */
    private static INDArray gather(INDArray a, int[] order) {
        INDArray out = Nd4j.createUninitialized(a.dataType(), a.rows(), a.columns());
        Kernels.gatherRows(Block.of(a), order, Block.of(out));
        return out;
    }

    /** A new c-order array whose row {@code order[j]} is row {@code j} of {@code a}. */
    private static INDArray scatter(INDArray a, int[] order) {
        INDArray out = Nd4j.createUninitialized(a.dataType(), a.rows(), a.columns());
        Kernels.scatterRows(Block.of(a), order, Block.of(out), false);
        return out;
    }
}
