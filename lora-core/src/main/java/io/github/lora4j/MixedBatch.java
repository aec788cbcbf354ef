package io.github.lora4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Inference on a batch whose rows use different adapters (PEFT's {@code adapter_names}): one base gemm for the whole
 * batch, then either the stacked path (all used adapters at once, three gemms) or one pair of thin gemms per adapter
 * over rows grouped into contiguous blocks. Holds the stacked A and B of the last stacked batch until
 * {@link #invalidate()}.
 */
final class MixedBatch {

    /**
     * Extra LoRA work, relative to the base product, up to which a mixed batch stacks its adapters: the stacked
     * path computes every row against every used adapter ({@code n·R·(in + out)} flops for a total rank {@code R}),
     * which is cheap next to the base product while {@code R·(in + out)} stays a fraction of {@code in·out}, and it
     * costs a fixed handful of calls however many adapters there are. Beyond it, rows are grouped per adapter.
     */
    static final double STACKED_WORK_LIMIT = 0.25;

    /** What the layer's base product is: {@code y = x W^T + b} into {@code y}. */
    interface Base {
        void product(INDArray x, INDArray y);
    }

    /** Used adapters (in layer order) with their A stacked by rows {@code [R, in]} and B by columns {@code [out, R]}. */
    private record StackedAdapters(List<LoraAdapter> adapters, INDArray a, INDArray b) {
    }

    /**
     * The stacked A and B of the adapters of the last stacked mixed batch; every exclusive operation of the layer
     * (adapter changes, weight updates, merges) drops it, so it never outlives the arrays it was copied from.
     */
    private volatile StackedAdapters stacked;

    /** Drops the stacked arrays; the layer calls this under its exclusive lock. */
    void invalidate() {
        stacked = null;
    }

    /**
     * Row {@code i} of {@code input [..., in]} (leading dimensions folded into rows) with adapter
     * {@code adapterPerRow[i]} (null or the base-model name: the base layer); with adapters disabled every row gets
     * the base output. Returns {@code [..., out]}.
     */
    INDArray forward(INDArray input, String[] adapterPerRow, AdapterSet adapters, Base base, LoraPath.Scratch scratch,
                     long out) {
        long[] outputShape = Kernels.withLast(input.shape(), out);
        INDArray x = Kernels.fold(input, input.size(-1));
        INDArray y = forward(x, adapterPerRow, adapters, adapters.enabled(), base, scratch, out);
        return x.rows() == 0 ? Nd4j.create(x.dataType(), outputShape) : y.reshape('c', outputShape);
    }

    private INDArray forward(INDArray x, String[] adapterPerRow, AdapterSet adapters, boolean enabled, Base base,
                             LoraPath.Scratch scratch, long out) {
        int n = Math.toIntExact(x.rows());
        DataType type = x.dataType();
        if (adapterPerRow.length != n) {
            throw new IllegalArgumentException("adapterPerRow: expected one name per row, " + n + " rows, got "
                    + adapterPerRow.length + " names");
        }
        Map<LoraAdapter, List<Integer>> groups = new LinkedHashMap<>();
        List<Integer> baseRows = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String name = adapterPerRow[i];
            if (name == null || name.equals(LoraLinear.BASE_MODEL) || !enabled) {
                baseRows.add(i);
            } else {
                LoraAdapter a = adapters.get(name);
                if (a == null) {
                    throw new IllegalArgumentException("adapterPerRow[" + i + "]: unknown adapter '" + name
                            + "'; known adapters: " + adapters.names() + " (or null / " + LoraLinear.BASE_MODEL + ")");
                }
                groups.computeIfAbsent(a, k -> new ArrayList<>()).add(i);
            }
        }
        if (n == 0) {
            return Nd4j.create(type, 0, out);
        }
        if (groups.isEmpty() || (groups.size() == 1 && baseRows.isEmpty())) {
            // One path for every row: exactly what forward(x) computes for that adapter (or the base layer).
            INDArray y = Nd4j.createUninitialized(type, n, out);
            base.product(x, y);
            if (!groups.isEmpty()) {
                LoraPath.forward(groups.keySet().iterator().next(), x, y, false, scratch);
            }
            return y;
        }
        int totalRank = groups.keySet().stream().mapToInt(LoraAdapter::rank).sum();
        if ((double) totalRank * (x.columns() + out) <= STACKED_WORK_LIMIT * x.columns() * out) {
            return stacked(x, n, groups, totalRank, adapters, base, out);
        }
        return grouped(x, n, groups, baseRows, base, out);
    }

    /** Rows permuted into one contiguous block per adapter, two thin gemms per block, and permuted back. */
    private static INDArray grouped(INDArray x, int n, Map<LoraAdapter, List<Integer>> groups, List<Integer> baseRows,
                                    Base base, long out) {
        int[] order = new int[n];
        int k = 0;
        for (int i : baseRows) {
            order[k++] = i;
        }
        for (List<Integer> rows : groups.values()) {
            for (int i : rows) {
                order[k++] = i;
            }
        }
        boolean inOrder = true;
        for (int i = 0; i < n && inOrder; i++) {
            inOrder = order[i] == i;
        }
        INDArray xs = inOrder ? x : Nd4j.pullRows(x, 1, order);
        INDArray ys = Nd4j.createUninitialized(x.dataType(), n, out);
        base.product(xs, ys);
        int start = baseRows.size();
        for (Map.Entry<LoraAdapter, List<Integer>> g : groups.entrySet()) {
            LoraAdapter a = g.getKey();
            int end = start + g.getValue().size();
            INDArray xb = xs.get(NDArrayIndex.interval(start, end), NDArrayIndex.all());
            INDArray yb = ys.get(NDArrayIndex.interval(start, end), NDArrayIndex.all());
            INDArray u = Nd4j.createUninitialized(x.dataType(), end - start, a.rank());
            Kernels.gemm(xb, a.a(), u, false, true, 1.0, 0.0);                // u = x_g A^T        [n_g, r]
            Kernels.gemm(u, a.b(), yb, false, true, a.scaling(), 1.0);        // y_g += s u B^T     [n_g, out]
            start = end;
        }
        if (inOrder) {
            return ys;
        }
        int[] inverse = new int[n];
        for (int i = 0; i < n; i++) {
            inverse[order[i]] = i;
        }
        return Nd4j.pullRows(ys, 1, inverse);
    }

    /**
     * Mixed batch by stacking: {@code A_cat [R, in]} and {@code B_cat [out, R]} hold every used adapter; {@code
     * u = x A_catᵀ} gives each row its projection onto every adapter, a mask keeps (and scales by {@code sₐ}) only the
     * columns of the row's own adapter, and {@code y += u B_catᵀ}. Base rows get an all-zero mask row. Three gemms
     * for any number of adapters (the stacked arrays are cached until an adapter changes), no row permutation.
     */
    private INDArray stacked(INDArray x, int n, Map<LoraAdapter, List<Integer>> groups, int totalRank,
                             AdapterSet adapters, Base base, long out) {
        // Adapters in the layer's own order, so that batches using the same adapters share the stacked arrays.
        List<LoraAdapter> used = new ArrayList<>();
        for (LoraAdapter a : adapters.all()) {
            if (groups.containsKey(a)) {
                used.add(a);
            }
        }
        StackedAdapters stack = stacked;
        if (stack == null || !stack.adapters().equals(used)) {
            // Readers may race to build it; each builds the same arrays from the same (read-locked) adapters.
            INDArray[] as = new INDArray[used.size()];
            INDArray[] bs = new INDArray[used.size()];
            for (int g = 0; g < as.length; g++) {
                as[g] = used.get(g).a();
                bs[g] = used.get(g).b();
            }
            stack = new StackedAdapters(List.copyOf(used), Nd4j.concat(0, as), Nd4j.concat(1, bs));
            stacked = stack;
        }
        double[] mask = new double[n * totalRank];
        int offset = 0;
        for (LoraAdapter a : used) {
            double s = a.scaling();
            for (int row : groups.get(a)) {
                Arrays.fill(mask, row * totalRank + offset, row * totalRank + offset + a.rank(), s);
            }
            offset += a.rank();
        }
        INDArray y = Nd4j.createUninitialized(x.dataType(), n, out);
        base.product(x, y);
        INDArray u = Nd4j.createUninitialized(x.dataType(), n, totalRank);
        Kernels.gemm(x, stack.a(), u, false, true, 1.0, 0.0);     // u = x A_cat^T          [n, R]
        Kernels.multiply(u, mask);                                 // keep each row's own adapter, times its s
        Kernels.gemm(u, stack.b(), y, false, true, 1.0, 1.0);     // y += u B_cat^T         [n, out]
        return y;
    }
}
