package io.github.lora4j;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Merge {@code W += Δ} (with {@code Δ = s·B·A}) so that the matching unmerge restores {@code W} bit for bit,
 * without a copy of {@code W}.
 *
 * <p>Why it works: {@code Δ} is computed block by block with the very same gemm calls at merge and at
 * unmerge, so both see identical {@code Δ} values; the merge writes {@code m = fl(w + d)}, and the unmerge
 * writes {@code fl(m − d)}, which equals {@code w} for almost every element. The merge evaluates that round
 * trip in the same pass and remembers the original bits of the few elements where it does not hold; the
 * unmerge patches exactly those. Arithmetic is plain Java {@code float}/{@code double} (IEEE, one rounding per
 * operation since Java 17), so the merge's simulation and the unmerge agree by construction, on any thread.
 *
 * <p>With {@link WeightLayout#IN_OUT} the same holds for {@code W^T += Δ^T}, block by block of W's rows.
 *
 * <p>Cost: per block of rows one small gemm into a scratch of {@link #BLOCK_ELEMENTS} elements, then one pass
 * over the block of {@code W} reading and writing each element once, split by rows over up to
 * {@link #THREADS} threads of the common fork-join pool (the gemm already uses ND4J's threads; the element pass
 * would otherwise run on one core); the element loop is branch-free so the JIT vectorises it. Memory: the scratch,
 * three row buffers per thread, and 12 bytes per remembered element (int index, raw bits), trimmed after the merge.
 */
final class ExactMerge {

    /** Elements of the {@code Δ} scratch (1 MiB in float32): few gemm calls, still cache-sized. */
    static final int BLOCK_ELEMENTS = 1 << 18;

    /** Threads for the element pass. */
    static final int THREADS = Math.max(1, Math.min(8, Runtime.getRuntime().availableProcessors()));

    /** Below this many elements per block one thread does the pass: forking would cost more than it saves. */
    private static final int MIN_PARALLEL_ELEMENTS = 1 << 14;

    private ExactMerge() {
    }

    /** The elements whose round trip {@code fl(fl(w + d) − d)} is not {@code w}: linear index and original bits, sorted. */
    static final class Record {
        // int indices: W is limited to 2^31 - 9 elements (checked in Pass).
        private int[] index = new int[16];
        private long[] bits = new long[16];
        private int size;
        /** The route the merge computed Δ on: the unmerge must compute the very same Δ, so it takes it too. */
        private final boolean direct = Kernels.direct();

        void add(int linearIndex, long rawBits) {
            if (size == index.length) {
                index = Arrays.copyOf(index, size * 2);
                bits = Arrays.copyOf(bits, size * 2);
            }
            index[size] = linearIndex;
            bits[size] = rawBits;
            size++;
        }

        /** Appends all of {@code later}, whose indices all follow this record's. */
        void addAll(Record later) {
            if (size + later.size > index.length) {
                int capacity = Math.max(size + later.size, index.length * 2);
                index = Arrays.copyOf(index, capacity);
                bits = Arrays.copyOf(bits, capacity);
            }
            System.arraycopy(later.index, 0, index, size, later.size);
            System.arraycopy(later.bits, 0, bits, size, later.size);
            size += later.size;
        }

        /** Drops unused capacity: the record lives as long as the merge, so it should hold what it needs only. */
        void trim() {
            index = Arrays.copyOf(index, size);
            bits = Arrays.copyOf(bits, size);
        }

        /** Position of the first entry with index {@code >= linearIndex}. */
        int lowerBound(long linearIndex) {
            int pos = Arrays.binarySearch(index, 0, size, (int) linearIndex);
            return pos >= 0 ? pos : -pos - 1;
        }

        /** Number of remembered elements. */
        int size() {
            return size;
        }

        /** Heap bytes of the remembered elements (12 per element: int index, raw bits; capacity included). */
        long bytes() {
            return 12L * index.length;
        }
    }

    /** Where a merge met a non-finite result: the element, its value and the update. */
    private record Failure(long row, int col, double w, double d) {
    }

    /**
     * {@code W += s·B·A} exactly reversibly. If any merged element would be NaN or infinite, the rows already
     * written are restored bit for bit and an {@link IllegalStateException} names the element; {@code W} is then
     * as it was.
     */
    static Record merge(INDArray w, boolean inOut, INDArray a, INDArray b, double s) {
        Record record = new Record();
        Pass pass = new Pass(w, inOut, a, b, s, record.direct);
        Failure failure = pass.merge(record);
        if (failure != null) {
            throw new IllegalStateException("merge would make W[" + failure.row() + ", " + failure.col()
                    + "] non-finite: W = " + failure.w() + ", s·(B·A) = " + failure.d() + " (out of " + w.rows() + "×"
                    + w.columns() + "); W left unchanged");
        }
        record.trim();
        return record;
    }

    /** Reverses {@link #merge}: after it, {@code W} is bitwise what it was before the merge. */
    static void unmerge(INDArray w, boolean inOut, INDArray a, INDArray b, double s, Record record) {
        new Pass(w, inOut, a, b, s, record.direct).unmerge(w.rows(), record);
    }

    /** One sweep over the rows of W, block by block. */
    private static final class Pass {
        final INDArray w;
        final boolean inOut;
        final INDArray a;
        final INDArray b;
        final double s;
        final int cols;
        final int blockRows;
        final INDArray scratch;
        final Kernel kernel;
        final boolean direct;

        Pass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean direct) {
            this.direct = direct;
            this.w = w;
            this.inOut = inOut;
            this.a = a;
            this.b = b;
            this.s = s;
            if (w.length() > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("exact merge supports W of up to 2^31 - 9 elements, got " + w.length());
            }
            this.cols = w.columns();
            this.blockRows = Math.max(1, Math.min(w.rows(), BLOCK_ELEMENTS / Math.max(1, cols)));
            this.scratch = Nd4j.zeros(w.dataType(), blockRows, cols);
            this.kernel = w.dataType() == DataType.DOUBLE ? new DoubleKernel(w, scratch, cols, blockRows)
                    : new FloatKernel(w, scratch, cols, blockRows);
        }

        /** Computes the block of Δ starting at row {@code r0}; identical calls at merge and unmerge. */
        int delta(long r0) {
            int rows = (int) Math.min(blockRows, w.rows() - r0);
            INDArray out = rows == blockRows ? scratch : scratch.get(NDArrayIndex.interval(0, rows), NDArrayIndex.all());
            // One block covering all of W takes A or B whole: a view costs more than a small W's whole pass.
            boolean whole = r0 == 0 && rows == w.rows();
            if (inOut) {
                // W [in, out]: rows of Δ^T = s·A^T B^T are columns of A.
                INDArray aRows = whole ? a : a.get(NDArrayIndex.all(), NDArrayIndex.interval(r0, r0 + rows));
                Kernels.gemm(direct, aRows, b, out, true, true, s, 0.0);
            } else {
                INDArray bRows = whole ? b : b.get(NDArrayIndex.interval(r0, r0 + rows), NDArrayIndex.all());
                Kernels.gemm(direct, bRows, a, out, false, false, s, 0.0);
            }
            kernel.loadDelta(rows);
            return rows;
        }

        /** Row chunk boundaries {@code [bounds[c], bounds[c + 1])} of a block of {@code rows} rows. */
        int[] chunks(int rows) {
            int parts = (long) rows * cols < MIN_PARALLEL_ELEMENTS ? 1 : Math.min(THREADS, rows);
            int[] bounds = new int[parts + 1];
            for (int c = 0; c <= parts; c++) {
                bounds[c] = (int) ((long) rows * c / parts);
            }
            return bounds;
        }

        /** Merges every row; on a non-finite result restores the rows written and returns where it failed. */
        Failure merge(Record record) {
            for (long r0 = 0; r0 < w.rows(); r0 += blockRows) {
                int rows = delta(r0);
                int[] bounds = chunks(rows);
                int parts = bounds.length - 1;
                Record[] partRecords = new Record[parts];
                Failure[] failures = new Failure[parts];
                int[] stoppedAt = new int[parts];
                long base = r0;
                forEachChunk(parts, c -> {
                    partRecords[c] = new Record();
                    int i = bounds[c];
                    Failure f = null;
                    Object rowBuffer = kernel.rowBuffer();
                    for (; i < bounds[c + 1] && f == null; i++) {
                        f = kernel.mergeRow(base + i, i, partRecords[c], rowBuffer);
                    }
                    failures[c] = f;
                    stoppedAt[c] = f == null ? i : i - 1;
                });
                Failure first = null;
                for (Failure f : failures) {
                    if (f != null) {
                        first = f;
                        break;
                    }
                }
                if (first != null) {
                    // Put back the rows this block wrote, then every earlier block: W is as it was.
                    forEachChunk(parts, c -> kernel.unmergeRows(base, bounds[c], stoppedAt[c], partRecords[c], 0));
                    unmerge(r0, record);
                    return first;
                }
                for (Record part : partRecords) {
                    record.addAll(part);
                }
            }
            return null;
        }

        /** Unmerges rows {@code [0, toRow)}, patching the recorded elements. */
        void unmerge(long toRow, Record record) {
            for (long r0 = 0; r0 < toRow; r0 += blockRows) {
                int rows = (int) Math.min(delta(r0), toRow - r0);
                int[] bounds = chunks(rows);
                long base = r0;
                forEachChunk(bounds.length - 1, c -> kernel.unmergeRows(base, bounds[c], bounds[c + 1], record,
                        record.lowerBound((base + bounds[c]) * cols)));
            }
        }
    }

    private interface ChunkTask {
        void run(int chunk);
    }

    /** Runs chunks 1.. on the common pool and chunk 0 on the caller, then waits for all. */
    private static void forEachChunk(int parts, ChunkTask task) {
        if (parts == 1) {
            task.run(0);
            return;
        }
        ForkJoinTask<?>[] forks = new ForkJoinTask<?>[parts - 1];
        for (int c = 1; c < parts; c++) {
            int chunk = c;
            forks[c - 1] = ForkJoinPool.commonPool().submit(() -> task.run(chunk));
        }
        RuntimeException error = null;
        try {
            task.run(0);
        } catch (RuntimeException e) {
            error = e;
        }
        for (ForkJoinTask<?> fork : forks) {
            try {
                fork.join();
            } catch (RuntimeException e) {
                if (error == null) {
                    error = e;
                }
            }
        }
        if (error != null) {
            throw error;
        }
    }

    /** Row arithmetic for one data type, reading and writing W through its NIO view (absolute, thread-safe). */
    private abstract static class Kernel {
        final int cols;
        final long base;
        final long rowStride;
        final long colStride;

        Kernel(INDArray w, int cols) {
            this.cols = cols;
            this.base = w.offset();
            this.rowStride = w.stride(0);
            this.colStride = w.stride(1);
        }

        int at(long row, int col) {
            return (int) (base + row * rowStride + col * colStride);
        }

        abstract void loadDelta(int rows);

        abstract Object rowBuffer();

        /** Writes row {@code row} merged and returns null; or leaves it untouched and returns the first non-finite element. */
        abstract Failure mergeRow(long row, int blockRow, Record record, Object rowBuffer);

        /** Writes rows {@code base + [from, to)} unmerged, patching from {@code record} starting at {@code cursor}. */
        abstract void unmergeRows(long base, int from, int to, Record record, int cursor);
    }

    private static final class FloatKernel extends Kernel {
        final FloatBuffer wBuf;
        final FloatBuffer dBuf;
        final float[] delta;

        FloatKernel(INDArray w, INDArray scratch, int cols, int blockRows) {
            super(w, cols);
            this.wBuf = w.data().asNioFloat();
            this.dBuf = scratch.data().asNioFloat();
            this.delta = new float[blockRows * cols];
        }

        @Override
        void loadDelta(int rows) {
            dBuf.get(0, delta, 0, rows * cols);
        }

        @Override
        Object rowBuffer() {
            return new FloatRow(cols);
        }

        private void read(long r, float[] row) {
            if (colStride == 1) {
                wBuf.get(at(r, 0), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    row[j] = wBuf.get(at(r, j));
                }
            }
        }

        private void write(long r, float[] row) {
            if (colStride == 1) {
                wBuf.put(at(r, 0), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    wBuf.put(at(r, j), row[j]);
                }
            }
        }

        @Override
        Failure mergeRow(long r, int blockRow, Record record, Object rowBuffer) {
            FloatRow buf = (FloatRow) rowBuffer;
            float[] row = buf.original;
            float[] merged = buf.merged;
            float[] back = buf.back;
            read(r, row);
            int off = blockRow * cols;
            // Pure float arithmetic, which the JIT vectorises: the merged value and its round trip m - d.
            for (int j = 0; j < cols; j++) {
                float d = delta[off + j];
                float m = row[j] + d;
                merged[j] = m;
                back[j] = m - d;
            }
            // Then one scalar pass: an element is remembered where the round trip misses its bits. A non-finite m
            // always misses (its round trip is infinite or NaN, w is finite), so the finiteness check lives here too.
            int mark = record.size;
            int rowIndex = (int) (r * cols);
            for (int j = 0; j < cols; j++) {
                int w = Float.floatToRawIntBits(row[j]);
                if (Float.floatToRawIntBits(back[j]) != w) {
                    if (!Float.isFinite(merged[j])) {
                        record.size = mark;
                        return new Failure(r, j, row[j], delta[off + j]);
                    }
                    record.add(rowIndex + j, w);
                }
            }
            write(r, merged);
            return null;
        }

        @Override
        void unmergeRows(long base, int from, int to, Record record, int cursor) {
            float[] row = new float[cols];
            for (int i = from; i < to; i++) {
                long r = base + i;
                read(r, row);
                int off = i * cols;
                for (int j = 0; j < cols; j++) {
                    row[j] = row[j] - delta[off + j];
                }
                long rowStart = r * cols;
                while (cursor < record.size && record.index[cursor] < rowStart + cols) {
                    row[(int) (record.index[cursor] - rowStart)] = Float.intBitsToFloat((int) record.bits[cursor]);
                    cursor++;
                }
                write(r, row);
            }
        }
    }

    private static final class DoubleKernel extends Kernel {
        final DoubleBuffer wBuf;
        final DoubleBuffer dBuf;
        final double[] delta;

        DoubleKernel(INDArray w, INDArray scratch, int cols, int blockRows) {
            super(w, cols);
            this.wBuf = w.data().asNioDouble();
            this.dBuf = scratch.data().asNioDouble();
            this.delta = new double[blockRows * cols];
        }

        @Override
        void loadDelta(int rows) {
            dBuf.get(0, delta, 0, rows * cols);
        }

        @Override
        Object rowBuffer() {
            return new DoubleRow(cols);
        }

        private void read(long r, double[] row) {
            if (colStride == 1) {
                wBuf.get(at(r, 0), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    row[j] = wBuf.get(at(r, j));
                }
            }
        }

        private void write(long r, double[] row) {
            if (colStride == 1) {
                wBuf.put(at(r, 0), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    wBuf.put(at(r, j), row[j]);
                }
            }
        }

        @Override
        Failure mergeRow(long r, int blockRow, Record record, Object rowBuffer) {
            DoubleRow buf = (DoubleRow) rowBuffer;
            double[] row = buf.original;
            double[] merged = buf.merged;
            long[] flags = buf.flags;
            read(r, row);
            int off = blockRow * cols;
            long inexact = 0;
            long nonFinite = 0;
            // One branch-free loop the JIT vectorises: the merged value, whether its round trip is inexact
            // (non-zero flag), and m - m, which is +0 exactly when m is finite.
            for (int j = 0; j < cols; j++) {
                double w = row[j];
                double d = delta[off + j];
                double m = w + d;
                merged[j] = m;
                long flag = Double.doubleToRawLongBits(m - d) ^ Double.doubleToRawLongBits(w);
                flags[j] = flag;
                inexact |= flag;
                nonFinite |= Double.doubleToRawLongBits(m - m);
            }
            if (nonFinite != 0) {
                for (int j = 0; j < cols; j++) {
                    if (!Double.isFinite(merged[j])) {
                        return new Failure(r, j, row[j], delta[off + j]);
                    }
                }
            }
            if (inexact != 0) {
                int rowIndex = (int) (r * cols);
                for (int j = 0; j < cols; j++) {
                    if (flags[j] != 0) {
                        record.add(rowIndex + j, Double.doubleToRawLongBits(row[j]));
                    }
                }
            }
            write(r, merged);
            return null;
        }

        @Override
        void unmergeRows(long base, int from, int to, Record record, int cursor) {
            double[] row = new double[cols];
            for (int i = from; i < to; i++) {
                long r = base + i;
                read(r, row);
                int off = i * cols;
                for (int j = 0; j < cols; j++) {
                    row[j] = row[j] - delta[off + j];
                }
                long rowStart = r * cols;
                while (cursor < record.size && record.index[cursor] < rowStart + cols) {
                    row[(int) (record.index[cursor] - rowStart)] = Double.longBitsToDouble(record.bits[cursor]);
                    cursor++;
                }
                write(r, row);
            }
        }
    }

    /** Per-thread row buffers of the float kernel: the row as read, as merged, and its round trip. */
    private static final class FloatRow {
        final float[] original;
        final float[] merged;
        final float[] back;

        FloatRow(int cols) {
            original = new float[cols];
            merged = new float[cols];
            back = new float[cols];
        }
    }

    /** Per-thread row buffers of the double kernel. */
    private static final class DoubleRow {
        final double[] original;
        final double[] merged;
        final long[] flags;

        DoubleRow(int cols) {
            original = new double[cols];
            merged = new double[cols];
            flags = new long[cols];
        }
    }
}
