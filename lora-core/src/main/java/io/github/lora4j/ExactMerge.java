package io.github.lora4j;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
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
 * operation since Java 17), so the merge's simulation and the unmerge agree by construction.
 *
 * <p>With {@link WeightLayout#IN_OUT} the same holds for {@code W^T += Δ^T}, block by block of W's rows.
 *
 * <p>Cost: a gemm into a scratch of {@link #BLOCK_ELEMENTS} elements per block of rows, and one pass over
 * {@code W} reading and writing each element once; memory: the scratch, two row buffers, and 16 bytes per
 * remembered element.
 */
final class ExactMerge {

    /** Elements of the {@code Δ} scratch (256 KiB in float32): small enough to stay in cache. */
    static final int BLOCK_ELEMENTS = 1 << 16;

    private ExactMerge() {
    }

    /** The elements whose round trip {@code fl(fl(w + d) − d)} is not {@code w}: their linear index and original bits. */
    static final class Record {
        private long[] index = new long[16];
        private long[] bits = new long[16];
        private int size;

        void add(long linearIndex, long rawBits) {
            if (size == index.length) {
                index = Arrays.copyOf(index, size * 2);
                bits = Arrays.copyOf(bits, size * 2);
            }
            index[size] = linearIndex;
            bits[size] = rawBits;
            size++;
        }

        /** Number of remembered elements. */
        int size() {
            return size;
        }

        /** Heap bytes of the remembered elements (16 per element, capacity included). */
        long bytes() {
            return 16L * index.length;
        }

        /** Drops entries at or beyond {@code linearIndex}; used when a merge is rolled back part way. */
        void truncateFrom(long linearIndex) {
            while (size > 0 && index[size - 1] >= linearIndex) {
                size--;
            }
        }
    }

    /**
     * {@code W += s·B·A} exactly reversibly. If any merged element would be NaN or infinite, the rows already
     * written are restored bit for bit and an {@link IllegalStateException} names the element; {@code W} is then
     * as it was.
     */
    static Record merge(INDArray w, boolean inOut, INDArray a, INDArray b, double s) {
        Record record = new Record();
        Pass pass = new Pass(w, inOut, a, b, s);
        long failedRow = pass.run(w.rows(), record, true);
        if (failedRow >= 0) {
            long cols = w.columns();
            int failedCol = pass.kernel.firstNonFinite;
            double wv = pass.kernel.failedW;
            double dv = pass.kernel.failedD;
            pass.run(failedRow, record, false);
            throw new IllegalStateException("merge would make W[" + failedRow + ", " + failedCol + "] non-finite: W = "
                    + wv + ", s·(B·A) = " + dv + " (out of " + w.rows() + "×" + cols + "); W left unchanged");
        }
        return record;
    }

    /** Reverses {@link #merge}: after it, {@code W} is bitwise what it was before the merge. */
    static void unmerge(INDArray w, boolean inOut, INDArray a, INDArray b, double s, Record record) {
        new Pass(w, inOut, a, b, s).run(w.rows(), record, false);
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
        final RowKernel kernel;

        Pass(INDArray w, boolean inOut, INDArray a, INDArray b, double s) {
            this.w = w;
            this.inOut = inOut;
            this.a = a;
            this.b = b;
            this.s = s;
            long c = w.columns();
            if (w.length() > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("exact merge supports W of up to 2^31 elements, got " + w.length());
            }
            this.cols = (int) c;
            this.blockRows = (int) Math.max(1, Math.min(w.rows(), BLOCK_ELEMENTS / Math.max(1, c)));
            this.scratch = Nd4j.zeros(w.dataType(), blockRows, c);
            this.kernel = w.dataType() == DataType.DOUBLE ? new DoubleKernel(w, scratch, cols, blockRows)
                    : new FloatKernel(w, scratch, cols, blockRows);
        }

        /**
         * Merges ({@code merge = true}) or unmerges rows {@code [0, to)}. Returns the row at which a merge met a
         * non-finite result (rows before it written, that row and later not), or -1.
         */
        long run(long to, Record record, boolean merge) {
            int cursor = 0;
            long totalRows = w.rows();
            for (long r0 = 0; r0 < to; r0 += blockRows) {
                // The gemm covers the whole block even when the sweep stops inside it (a rollback), so every
                // sweep computes Δ with identical calls and so identical values.
                int rows = (int) Math.min(blockRows, totalRows - r0);
                int used = (int) Math.min(rows, to - r0);
                INDArray out = rows == blockRows ? scratch
                        : scratch.get(NDArrayIndex.interval(0, rows), NDArrayIndex.all());
                if (inOut) {
                    // W [in, out]: rows of Δ^T = s·A^T B^T are columns of A.
                    INDArray aBlock = a.get(NDArrayIndex.all(), NDArrayIndex.interval(r0, r0 + rows));
                    Nd4j.gemm(aBlock, b, out, true, true, s, 0.0);
                } else {
                    INDArray bBlock = b.get(NDArrayIndex.interval(r0, r0 + rows), NDArrayIndex.all());
                    Nd4j.gemm(bBlock, a, out, false, false, s, 0.0);
                }
                kernel.loadDelta(rows);
                for (int i = 0; i < used; i++) {
                    long row = r0 + i;
                    if (merge) {
                        if (!kernel.mergeRow(row, i, record)) {
                            record.truncateFrom(row * cols);
                            return row;
                        }
                    } else {
                        cursor = kernel.unmergeRow(row, i, record, cursor);
                    }
                }
            }
            return -1;
        }
    }

    /** Row arithmetic for one data type, reading and writing W through its NIO view. */
    private abstract static class RowKernel {
        final int cols;
        final long base;
        final long rowStride;
        final long colStride;
        int firstNonFinite = -1;
        double failedW;
        double failedD;

        RowKernel(INDArray w, int cols) {
            this.cols = cols;
            this.base = w.offset();
            this.rowStride = w.stride(0);
            this.colStride = w.stride(1);
        }

        long at(long row, int col) {
            return base + row * rowStride + col * colStride;
        }

        abstract void loadDelta(int rows);

        /** Writes row {@code row} merged; false (row untouched) if an element would be non-finite. */
        abstract boolean mergeRow(long row, int blockRow, Record record);

        /** Writes row {@code row} unmerged and patched; returns the advanced record cursor. */
        abstract int unmergeRow(long row, int blockRow, Record record, int cursor);
    }

    private static final class FloatKernel extends RowKernel {
        final FloatBuffer wBuf;
        final FloatBuffer dBuf;
        final float[] delta;
        final float[] row;

        FloatKernel(INDArray w, INDArray scratch, int cols, int blockRows) {
            super(w, cols);
            this.wBuf = w.data().asNioFloat();
            this.dBuf = scratch.data().asNioFloat();
            this.delta = new float[blockRows * cols];
            this.row = new float[cols];
        }

        @Override
        void loadDelta(int rows) {
            dBuf.get(0, delta, 0, rows * cols);
        }

        private void read(long r) {
            if (colStride == 1) {
                wBuf.get(Math.toIntExact(at(r, 0)), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    row[j] = wBuf.get((int) at(r, j));
                }
            }
        }

        private void write(long r) {
            if (colStride == 1) {
                wBuf.put(Math.toIntExact(at(r, 0)), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    wBuf.put((int) at(r, j), row[j]);
                }
            }
        }

        @Override
        boolean mergeRow(long r, int blockRow, Record record) {
            read(r);
            int off = blockRow * cols;
            int inexact = 0;
            int nonFinite = 0;
            // Branch-free so the JIT can vectorise; m − m is +0 exactly when m is finite.
            for (int j = 0; j < cols; j++) {
                float w = row[j];
                float d = delta[off + j];
                float m = w + d;
                inexact |= Float.floatToRawIntBits(m - d) ^ Float.floatToRawIntBits(w);
                nonFinite |= Float.floatToRawIntBits(m - m);
            }
            if (nonFinite != 0) {
                for (int j = 0; j < cols; j++) {
                    if (!Float.isFinite(row[j] + delta[off + j])) {
                        firstNonFinite = j;
                        failedW = row[j];
                        failedD = delta[off + j];
                        break;
                    }
                }
                return false;
            }
            long rowIndex = r * cols;
            for (int j = 0; j < cols; j++) {
                float w = row[j];
                float d = delta[off + j];
                float m = w + d;
                if (inexact != 0 && Float.floatToRawIntBits(m - d) != Float.floatToRawIntBits(w)) {
                    record.add(rowIndex + j, Float.floatToRawIntBits(w));
                }
                row[j] = m;
            }
            write(r);
            return true;
        }

        @Override
        int unmergeRow(long r, int blockRow, Record record, int cursor) {
            read(r);
            int off = blockRow * cols;
            for (int j = 0; j < cols; j++) {
                row[j] = row[j] - delta[off + j];
            }
            long rowEnd = (r + 1) * cols;
            while (cursor < record.size && record.index[cursor] < rowEnd) {
                row[(int) (record.index[cursor] - r * cols)] = Float.intBitsToFloat((int) record.bits[cursor]);
                cursor++;
            }
            write(r);
            return cursor;
        }
    }

    private static final class DoubleKernel extends RowKernel {
        final DoubleBuffer wBuf;
        final DoubleBuffer dBuf;
        final double[] delta;
        final double[] row;

        DoubleKernel(INDArray w, INDArray scratch, int cols, int blockRows) {
            super(w, cols);
            this.wBuf = w.data().asNioDouble();
            this.dBuf = scratch.data().asNioDouble();
            this.delta = new double[blockRows * cols];
            this.row = new double[cols];
        }

        @Override
        void loadDelta(int rows) {
            dBuf.get(0, delta, 0, rows * cols);
        }

        private void read(long r) {
            if (colStride == 1) {
                wBuf.get(Math.toIntExact(at(r, 0)), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    row[j] = wBuf.get((int) at(r, j));
                }
            }
        }

        private void write(long r) {
            if (colStride == 1) {
                wBuf.put(Math.toIntExact(at(r, 0)), row, 0, cols);
            } else {
                for (int j = 0; j < cols; j++) {
                    wBuf.put((int) at(r, j), row[j]);
                }
            }
        }

        @Override
        boolean mergeRow(long r, int blockRow, Record record) {
            read(r);
            int off = blockRow * cols;
            long inexact = 0;
            long nonFinite = 0;
            for (int j = 0; j < cols; j++) {
                double w = row[j];
                double d = delta[off + j];
                double m = w + d;
                inexact |= Double.doubleToRawLongBits(m - d) ^ Double.doubleToRawLongBits(w);
                nonFinite |= Double.doubleToRawLongBits(m - m);
            }
            if (nonFinite != 0) {
                for (int j = 0; j < cols; j++) {
                    if (!Double.isFinite(row[j] + delta[off + j])) {
                        firstNonFinite = j;
                        failedW = row[j];
                        failedD = delta[off + j];
                        break;
                    }
                }
                return false;
            }
            long rowIndex = r * cols;
            for (int j = 0; j < cols; j++) {
                double w = row[j];
                double d = delta[off + j];
                double m = w + d;
                if (inexact != 0 && Double.doubleToRawLongBits(m - d) != Double.doubleToRawLongBits(w)) {
                    record.add(rowIndex + j, Double.doubleToRawLongBits(w));
                }
                row[j] = m;
            }
            write(r);
            return true;
        }

        @Override
        int unmergeRow(long r, int blockRow, Record record, int cursor) {
            read(r);
            int off = blockRow * cols;
            for (int j = 0; j < cols; j++) {
                row[j] = row[j] - delta[off + j];
            }
            long rowEnd = (r + 1) * cols;
            while (cursor < record.size && record.index[cursor] < rowEnd) {
                row[(int) (record.index[cursor] - r * cols)] = Double.longBitsToDouble(record.bits[cursor]);
                cursor++;
            }
            write(r);
            return cursor;
        }
    }
}
