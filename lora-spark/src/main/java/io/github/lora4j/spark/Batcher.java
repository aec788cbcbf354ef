package io.github.lora4j.spark;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;

/**
 * Cuts one partition's elements (each a {@link DataSet} or {@link MultiDataSet} of one or more rows) into batches
 * of {@code batchSize} rows, in order: batch {@code t} holds the partition's rows {@code [t·b, (t+1)·b)}, however
 * the rows were grouped into elements. Checks every element against the {@link DataSpec} (and for NaN or infinity)
 * on the way, so a bad element fails the preparation, before any step runs.
 */
final class Batcher {

    /** Rows {@code [from, to)} of one converted element. */
    private record Piece(HeapArray[][] arrays, int from, int to) {
    }

    /** Slot groups of an element: features, labels, feature masks, label masks. */
    private static final String[] GROUPS = {"features", "labels", "features mask", "labels mask"};

    private final DataSpec spec;
    private final int batchSize;
    private final int partition;
    private final List<Batch> batches = new ArrayList<>();
    private final List<Piece> pending = new ArrayList<>();
    private int pendingRows;
    private long rows;
    private int elements;
    /** Per group and slot, the shape after the row dimension that every element must share; set by the first. */
    private long[][][] rowShapes;

    Batcher(DataSpec spec, int batchSize, int partition) {
        this.spec = spec;
        this.batchSize = batchSize;
        this.partition = partition;
    }

    /** Adds the next element of the partition. */
    void add(Object element) {
        String where = "partition " + partition + ", element " + elements;
        elements++;
        INDArray[][] groups = groups(where, element);
        long n = spec.check(where, groups[0], groups[1], groups[2], groups[3]);
        HeapArray[][] heap = new HeapArray[4][];
        for (int g = 0; g < 4; g++) {
            if (groups[g] != null) {
                heap[g] = new HeapArray[groups[g].length];
                for (int s = 0; s < groups[g].length; s++) {
                    heap[g][s] = groups[g][s] == null ? null : convert(where, g, s, groups[g][s]);
                }
            }
        }
        checkConsistent(where, heap);
        int from = 0;
        while (from < n) {
            int take = (int) Math.min(batchSize - pendingRows, n - from);
            pending.add(new Piece(heap, from, from + take));
            pendingRows += take;
            from += take;
            if (pendingRows == batchSize) {
                flush();
            }
        }
        rows += n;
    }

    /** The partition's batches; the last one may hold fewer than {@code batchSize} rows. */
    PartitionBatches finish() {
        if (pendingRows > 0) {
            flush();
        }
        return new PartitionBatches(partition, List.copyOf(batches), rows);
    }

    private INDArray[][] groups(String where, Object element) {
        if (element instanceof DataSet ds && spec.container().equals("DataSet")) {
            return new INDArray[][] {{ds.getFeatures()}, {ds.getLabels()},
                    ds.getFeaturesMaskArray() == null ? null : new INDArray[] {ds.getFeaturesMaskArray()},
                    ds.getLabelsMaskArray() == null ? null : new INDArray[] {ds.getLabelsMaskArray()}};
        }
        if (element instanceof MultiDataSet mds && spec.container().equals("MultiDataSet")) {
            return new INDArray[][] {mds.getFeatures(), mds.getLabels(), nullIfAllNull(mds.getFeaturesMaskArrays()),
                    nullIfAllNull(mds.getLabelsMaskArrays())};
        }
        throw new IllegalArgumentException(where + ": expected a " + spec.container() + ", got "
                + (element == null ? "null" : element.getClass().getName()));
    }

    private static INDArray[] nullIfAllNull(INDArray[] a) {
        return a == null || Arrays.stream(a).allMatch(x -> x == null) ? null : a;
    }

    private HeapArray convert(String where, int group, int slot, INDArray arr) {
        HeapArray h = HeapArray.of(arr, spec.type());
        int bad = h.data().firstNonFinite();
        if (bad >= 0) {
            String name = GROUPS[group] + (group % 2 == 0 && spec.numInputs() == 1 || group % 2 == 1
                    && spec.numOutputs() == 1 ? "" : "[" + slot + "]");
            throw new IllegalArgumentException(where + ": " + name + " holds " + h.data().get(bad) + " in row "
                    + bad / Math.max(1, h.rowSize()) + "; expected finite numbers");
        }
        return h;
    }

    /** Every element has the same arrays (and masks or none), each with the same shape after the row dimension. */
    private void checkConsistent(String where, HeapArray[][] heap) {
        long[][][] shapes = new long[4][][];
        for (int g = 0; g < 4; g++) {
            if (heap[g] != null) {
                shapes[g] = new long[heap[g].length][];
                for (int s = 0; s < heap[g].length; s++) {
                    shapes[g][s] = heap[g][s] == null ? null : heap[g][s].rowShape();
                }
            }
        }
        if (rowShapes == null) {
            rowShapes = shapes;
            return;
        }
        for (int g = 0; g < 4; g++) {
            if (!Arrays.deepEquals(rowShapes[g], shapes[g])) {
                throw new IllegalArgumentException(where + ": expected " + GROUPS[g] + " rows of shape "
                        + Arrays.deepToString(rowShapes[g]) + " (as element 0 of the partition), got "
                        + Arrays.deepToString(shapes[g]) + "; rows of one partition are concatenated into batches");
            }
        }
    }

    private void flush() {
        HeapArray[][] out = new HeapArray[4][];
        HeapArray[][] first = pending.get(0).arrays();
        for (int g = 0; g < 4; g++) {
            if (first[g] == null) {
                continue;
            }
            out[g] = new HeapArray[first[g].length];
            for (int s = 0; s < first[g].length; s++) {
                if (first[g][s] != null) {
                    out[g][s] = concatRows(g, s);
                }
            }
        }
        batches.add(new Batch(pendingRows, out[0], out[1], out[2], out[3]));
        pending.clear();
        pendingRows = 0;
    }

    private HeapArray concatRows(int group, int slot) {
        HeapArray proto = pending.get(0).arrays()[group][slot];
        int rowSize = proto.rowSize();
        FlatVector data = FlatVector.zeros(spec.type(), Math.multiplyExact(pendingRows, rowSize));
        int off = 0;
        for (Piece p : pending) {
            HeapArray a = p.arrays()[group][slot];
            int n = (p.to() - p.from()) * rowSize;
            data.copyRange(a.data(), p.from() * rowSize, off, n);
            off += n;
        }
        long[] shape = proto.shape().clone();
        shape[0] = pendingRows;
        return new HeapArray(shape, data);
    }
}
