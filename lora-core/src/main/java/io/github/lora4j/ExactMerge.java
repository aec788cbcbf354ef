package io.github.lora4j;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Merge {@code W += Δ} (with {@code Δ = s·B·A}) so that the matching unmerge restores {@code W} bit for bit,
 * without a copy of {@code W}.
 *
 * <p>Why it works: {@code Δ} is computed row by row in Java, by the very same code at merge and at unmerge, so
 * both see identical {@code Δ} values (Java arithmetic is IEEE with one rounding per operation, and
 * {@link Math#fma} is exactly rounded, on any thread and any JIT tier); the merge writes {@code m = fl(w + d)},
 * and the unmerge writes {@code fl(m − d)}, which equals {@code w} for almost every element. The merge evaluates
 * that round trip in the same pass and remembers the original bits of the few elements where it does not hold;
 * the unmerge patches exactly those. No BLAS call takes part, so the result does not depend on the BLAS, its
 * threads or the backend.
 *
 * <p>With {@link WeightLayout#IN_OUT} the same holds for {@code W^T += Δ^T}: row {@code j} of W is
 * {@code Σ_k A[k, j]·B[:, k]}.
 *
 * <p>Cost: one pass over {@code W}, reading and writing each element once, split by rows over up to
 * {@link #THREADS} threads of the common fork-join pool. Each row is handled in tiles of {@link #TILE} columns:
 * {@code d = s·Σ_k c_k·v_k} over the tile ({@code r} multiply-adds per element, four rank terms per loop, which
 * the JIT vectorises), then {@code m = w + d} and {@code m − d}, then a vectorised {@link Arrays#mismatch} scan
 * that finds the rare elements whose round trip misses. Every loop indexes all its arrays from 0: the JIT of JDK
 * 17 does not vectorise loops whose arrays are read at different offsets. Memory: the factors as Java arrays
 * ({@code r·(in + out)} elements), a few row buffers per thread, and 12 bytes per remembered element (int index,
 * raw bits), trimmed after the merge.
 */
final class ExactMerge {

    /** Columns per tile: the tile's buffers and its {@code r} factor rows stay in the first-level cache. */
    static final int TILE = 1024;

    /** Threads for the pass. */
    static final int THREADS = Math.max(1, Math.min(8, Runtime.getRuntime().availableProcessors()));

    /** Below this much work ({@code rows·cols·(r + 4)}) one thread does the pass: forking would cost more. */
    private static final long MIN_PARALLEL_WORK = 1L << 20;

    /** Test switch: true computes Δ with a multiply and an add instead of {@link Math#fma}. */
    private static volatile boolean forcedMulAdd;

    private ExactMerge() { }

    /** Package-private switch for tests: true makes later merges use the multiply-add route. */
    static void forceMulAdd(boolean mulAdd) {
        forcedMulAdd = mulAdd;
    }

    /** The elements whose round trip {@code fl(fl(w + d) − d)} is not {@code w}: linear index and original bits, sorted. */
    static final class Record {
        // int indices: W is limited to 2^31 - 9 elements (checked in Pass).
        private int[] index = new int[16];
        private long[] bits = new long[16];
        private int size;
        /** How the merge computed Δ: the unmerge must compute the very same Δ, so it takes the same way. */
        private final boolean fma;

        Record(boolean fma) {
            this.fma = fma;
        }

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
    private record Failure(long row, int col, double w, double d) { }

    /**
     * {@code W += s·B·A} exactly reversibly. If any merged element would be NaN or infinite, the rows already
     * written are restored bit for bit and an {@link IllegalStateException} names the element; {@code W} is then
     * as it was.
     */
    static Record merge(INDArray w, boolean inOut, INDArray a, INDArray b, double s) {
        Record record = new Record(Fma.INTRINSIC && !forcedMulAdd);
        Failure failure = pass(w, inOut, a, b, s, record.fma).merge(record);
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
        pass(w, inOut, a, b, s, record.fma).unmerge(record);
    }

    private static Pass pass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        if (w.length() > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("exact merge supports W of up to 2^31 - 9 elements, got " + w.length());
        }
        return w.dataType() == DataType.DOUBLE ? new DoublePass(w, inOut, a, b, s, fma)
                : new FloatPass(w, inOut, a, b, s, fma);
    }

    /** A c-order copy of a FLOAT or DOUBLE array's elements, as doubles or floats by {@code asDouble}. */
    private static Object elements(INDArray x, boolean asDouble) {
        INDArray c = Kernels.rowMajorContiguous(x) ? x : x.dup('c');
        int n = Math.toIntExact(c.length());
        if (asDouble) {
            double[] out = new double[n];
            c.data().asNioDouble().get((int) c.offset(), out);
            return out;
        }
        float[] out = new float[n];
        c.data().asNioFloat().get((int) c.offset(), out);
        return out;
    }

    /**
     * One sweep over the rows of W. Row {@code i} gets {@code d = s·Σ_k coef[i·r + k]·v_k}, where for W
     * {@code [out, in]} the coefficients are B's rows and {@code v_k} A's rows, and for W {@code [in, out]} the
     * coefficients are A's columns and {@code v_k} B's columns.
     */
    private abstract static class Pass {
        final long base;
        final long rowStride;
        final long colStride;
        final int rows;
        final int cols;
        final int rank;
        final boolean fma;
        /** Tile {@code t} starts at column {@code t·TILE}; its length. */
        final int[] tileLength;

        Pass(INDArray w, int rank, boolean fma) {
            this.base = w.offset();
            this.rowStride = w.stride(0);
            this.colStride = w.stride(1);
            this.rows = w.rows();
            this.cols = w.columns();
            this.rank = rank;
            this.fma = fma;
            int tiles = (cols + TILE - 1) / TILE;
            this.tileLength = new int[tiles];
            for (int t = 0; t < tiles; t++) {
                tileLength[t] = Math.min(TILE, cols - t * TILE);
            }
        }

        int at(long row, int col) {
            return (int) (base + row * rowStride + col * colStride);
        }

        /** Row chunk boundaries {@code [bounds[c], bounds[c + 1])}. */
        int[] chunks() {
            int parts = (long) rows * cols * (rank + 4) < MIN_PARALLEL_WORK ? 1 : Math.min(THREADS, rows);
            int[] bounds = new int[parts + 1];
            for (int c = 0; c <= parts; c++) {
                bounds[c] = (int) ((long) rows * c / parts);
            }
            return bounds;
        }

        /** Merges every row; on a non-finite result restores the rows written and returns where it failed. */
        Failure merge(Record record) {
            int[] bounds = chunks();
            int parts = bounds.length - 1;
            Record[] partRecords = new Record[parts];
            Failure[] failures = new Failure[parts];
            int[] stoppedAt = new int[parts];
            forEachChunk(parts, c -> {
                Record part = parts == 1 ? record : new Record(fma);
                partRecords[c] = part;
                Rows buffers = rowBuffers();
                int i = bounds[c];
                Failure f = null;
                for (; i < bounds[c + 1] && f == null; i++) {
                    f = mergeRow(i, part, buffers);
                }
                failures[c] = f;
                stoppedAt[c] = f == null ? i : i - 1;
            });
            for (Failure f : failures) {
                if (f != null) {
                    // Put back the rows each chunk wrote (the failing row was not written): W is as it was.
                    forEachChunk(parts, c -> unmergeRows(bounds[c], stoppedAt[c], partRecords[c], 0, rowBuffers()));
                    return f;
                }
            }
            if (parts > 1) {
                for (Record part : partRecords) {
                    record.addAll(part);
                }
            }
            return null;
        }

        /** Unmerges every row, patching the recorded elements. */
        void unmerge(Record record) {
            int[] bounds = chunks();
            forEachChunk(bounds.length - 1, c -> unmergeRows(bounds[c], bounds[c + 1], record,
                    record.lowerBound((long) bounds[c] * cols), rowBuffers()));
        }

        abstract Rows rowBuffers();

        /** Writes row {@code i} merged and returns null; or leaves it untouched and returns its first non-finite element. */
        abstract Failure mergeRow(int i, Record record, Rows buffers);

        /** Writes rows {@code [from, to)} unmerged, patching from {@code record} starting at {@code cursor}. */
        abstract void unmergeRows(int from, int to, Record record, int cursor, Rows buffers);
    }

    /** One thread's buffers: W's row and the merged row by tile, the tile's Δ and round trip. */
    private record Rows(Object row, Object merged, Object delta, Object back) { }

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

    private static final class FloatPass extends Pass {
        final FloatBuffer wBuf;
        final float s;
        /** {@code coef[i·r + k]}: the coefficient of rank term {@code k} in row {@code i}. */
        final float[] coef;
        /** {@code v[t][k]}: tile {@code t} of rank term {@code k}'s row. */
        final float[][][] v;

        FloatPass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
            super(w, a.rows(), fma);
            this.wBuf = w.data().asNioFloat();
            this.s = (float) s;
            float[] af = (float[]) elements(a, false);   // [r, in]
            float[] bf = (float[]) elements(b, false);   // [out, r]
            int r = rank;
            int in = a.columns();
            int out = b.rows();
            if (!inOut) {
                coef = bf;                                // B [out, r]: row i's coefficients are B[i, :]
            } else {
                coef = new float[in * r];                 // A^T [in, r]
                for (int k = 0; k < r; k++) {
                    for (int j = 0; j < in; j++) {
                        coef[j * r + k] = af[k * in + j];
                    }
                }
            }
            v = new float[tileLength.length][r][];
            for (int k = 0; k < r; k++) {
                for (int t = 0; t < tileLength.length; t++) {
                    float[] tile = new float[tileLength[t]];
                    for (int j = 0; j < tile.length; j++) {
                        int col = t * TILE + j;
                        tile[j] = inOut ? bf[col * r + k] : af[k * in + col];   // B[:, k] or A[k, :]
                    }
                    v[t][k] = tile;
                }
            }
            assert (inOut ? out : in) == cols;
        }

        @Override
        Rows rowBuffers() {
            float[][] row = new float[tileLength.length][];
            float[][] merged = new float[tileLength.length][];
            for (int t = 0; t < row.length; t++) {
                row[t] = new float[tileLength[t]];
                merged[t] = new float[tileLength[t]];
            }
            return new Rows(row, merged, new float[tileLength[0]], new float[tileLength[0]]);
        }

        /** {@code acc = Σ_k coef[c + k]·v_k} over one tile, four rank terms per loop; the same code for merge and unmerge. */
        private void delta(int c, float[][] vt, float[] acc, int len) {
            int k = 0;
            int r = rank;
            if (r >= 4) {
                float c0 = coef[c];
                float c1 = coef[c + 1];
                float c2 = coef[c + 2];
                float c3 = coef[c + 3];
                float[] v0 = vt[0];
                float[] v1 = vt[1];
                float[] v2 = vt[2];
                float[] v3 = vt[3];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], c0 * v0[j])));
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] = (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                    }
                }
                k = 4;
            } else {
                Arrays.fill(acc, 0, len, 0f);
            }
            for (; k + 3 < r; k += 4) {
                float c0 = coef[c + k];
                float c1 = coef[c + k + 1];
                float c2 = coef[c + k + 2];
                float c3 = coef[c + k + 3];
                float[] v0 = vt[k];
                float[] v1 = vt[k + 1];
                float[] v2 = vt[k + 2];
                float[] v3 = vt[k + 3];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] += (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                    }
                }
            }
            for (; k < r; k++) {
                float ck = coef[c + k];
                float[] vk = vt[k];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(ck, vk[j], acc[j]);
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] += ck * vk[j];
                    }
                }
            }
        }

        private void read(int i, int t, float[] tile) {
            int j0 = t * TILE;
            if (colStride == 1) {
                wBuf.get(at(i, j0), tile, 0, tile.length);
            } else {
                for (int j = 0; j < tile.length; j++) {
                    tile[j] = wBuf.get(at(i, j0 + j));
                }
            }
        }

        private void write(int i, int t, float[] tile) {
            int j0 = t * TILE;
            if (colStride == 1) {
                wBuf.put(at(i, j0), tile, 0, tile.length);
            } else {
                for (int j = 0; j < tile.length; j++) {
                    wBuf.put(at(i, j0 + j), tile[j]);
                }
            }
        }

        @Override
        Failure mergeRow(int i, Record record, Rows buffers) {
            float[][] row = (float[][]) buffers.row();
            float[][] merged = (float[][]) buffers.merged();
            float[] acc = (float[]) buffers.delta();
            float[] back = (float[]) buffers.back();
            int mark = record.size;
            int c = i * rank;
            for (int t = 0; t < row.length; t++) {
                float[] w = row[t];
                float[] m = merged[t];
                int len = w.length;
                read(i, t, w);
                delta(c, v[t], acc, len);
                float sf = s;
                // The merged value and its round trip m - d, in one branch-free loop the JIT vectorises.
                for (int j = 0; j < len; j++) {
                    float d = sf * acc[j];
                    float mj = w[j] + d;
                    m[j] = mj;
                    back[j] = mj - d;
                }
                // A vectorised scan for the elements whose round trip misses their bits (w is finite, never NaN, so
                // mismatch's float comparison is a bit comparison here). A non-finite m always misses (its round
                // trip is infinite or NaN), so the finiteness check lives here too.
                int linear = i * cols + t * TILE;
                for (int j = Arrays.mismatch(back, 0, len, w, 0, len); j >= 0; ) {
                    if (!Float.isFinite(m[j])) {
                        record.size = mark;
                        return new Failure(i, t * TILE + j, w[j], sf * acc[j]);
                    }
                    record.add(linear + j, Float.floatToRawIntBits(w[j]));
                    int next = j + 1 >= len ? -1 : Arrays.mismatch(back, j + 1, len, w, j + 1, len);
                    j = next < 0 ? -1 : j + 1 + next;
                }
            }
            for (int t = 0; t < row.length; t++) {
                write(i, t, merged[t]);
            }
            return null;
        }

        @Override
        void unmergeRows(int from, int to, Record record, int cursor, Rows buffers) {
            float[][] row = (float[][]) buffers.row();
            float[] acc = (float[]) buffers.delta();
            for (int i = from; i < to; i++) {
                int c = i * rank;
                for (int t = 0; t < row.length; t++) {
                    float[] w = row[t];
                    int len = w.length;
                    read(i, t, w);
                    delta(c, v[t], acc, len);
                    float sf = s;
                    for (int j = 0; j < len; j++) {
                        w[j] = w[j] - sf * acc[j];
                    }
                    int start = i * cols + t * TILE;
                    while (cursor < record.size && record.index[cursor] < start + len) {
                        w[record.index[cursor] - start] = Float.intBitsToFloat((int) record.bits[cursor]);
                        cursor++;
                    }
                    write(i, t, w);
                }
            }
        }
    }

    private static final class DoublePass extends Pass {
        final DoubleBuffer wBuf;
        final double s;
        final double[] coef;
        final double[][][] v;

        DoublePass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
            super(w, a.rows(), fma);
            this.wBuf = w.data().asNioDouble();
            this.s = s;
            double[] af = (double[]) elements(a, true);
            double[] bf = (double[]) elements(b, true);
            int r = rank;
            int in = a.columns();
            if (!inOut) {
                coef = bf;
            } else {
                coef = new double[in * r];
                for (int k = 0; k < r; k++) {
                    for (int j = 0; j < in; j++) {
                        coef[j * r + k] = af[k * in + j];
                    }
                }
            }
            v = new double[tileLength.length][r][];
            for (int k = 0; k < r; k++) {
                for (int t = 0; t < tileLength.length; t++) {
                    double[] tile = new double[tileLength[t]];
                    for (int j = 0; j < tile.length; j++) {
                        int col = t * TILE + j;
                        tile[j] = inOut ? bf[col * r + k] : af[k * in + col];
                    }
                    v[t][k] = tile;
                }
            }
        }

        @Override
        Rows rowBuffers() {
            double[][] row = new double[tileLength.length][];
            double[][] merged = new double[tileLength.length][];
            for (int t = 0; t < row.length; t++) {
                row[t] = new double[tileLength[t]];
                merged[t] = new double[tileLength[t]];
            }
            return new Rows(row, merged, new double[tileLength[0]], new double[tileLength[0]]);
        }

        /** {@link FloatPass}'s Δ in double. */
        private void delta(int c, double[][] vt, double[] acc, int len) {
            int k = 0;
            int r = rank;
            if (r >= 4) {
                double c0 = coef[c];
                double c1 = coef[c + 1];
                double c2 = coef[c + 2];
                double c3 = coef[c + 3];
                double[] v0 = vt[0];
                double[] v1 = vt[1];
                double[] v2 = vt[2];
                double[] v3 = vt[3];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], c0 * v0[j])));
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] = (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                    }
                }
                k = 4;
            } else {
                Arrays.fill(acc, 0, len, 0.0);
            }
            for (; k + 3 < r; k += 4) {
                double c0 = coef[c + k];
                double c1 = coef[c + k + 1];
                double c2 = coef[c + k + 2];
                double c3 = coef[c + k + 3];
                double[] v0 = vt[k];
                double[] v1 = vt[k + 1];
                double[] v2 = vt[k + 2];
                double[] v3 = vt[k + 3];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] += (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                    }
                }
            }
            for (; k < r; k++) {
                double ck = coef[c + k];
                double[] vk = vt[k];
                if (fma) {
                    for (int j = 0; j < len; j++) {
                        acc[j] = Math.fma(ck, vk[j], acc[j]);
                    }
                } else {
                    for (int j = 0; j < len; j++) {
                        acc[j] += ck * vk[j];
                    }
                }
            }
        }

        private void read(int i, int t, double[] tile) {
            int j0 = t * TILE;
            if (colStride == 1) {
                wBuf.get(at(i, j0), tile, 0, tile.length);
            } else {
                for (int j = 0; j < tile.length; j++) {
                    tile[j] = wBuf.get(at(i, j0 + j));
                }
            }
        }

        private void write(int i, int t, double[] tile) {
            int j0 = t * TILE;
            if (colStride == 1) {
                wBuf.put(at(i, j0), tile, 0, tile.length);
            } else {
                for (int j = 0; j < tile.length; j++) {
                    wBuf.put(at(i, j0 + j), tile[j]);
                }
            }
        }

        @Override
        Failure mergeRow(int i, Record record, Rows buffers) {
            double[][] row = (double[][]) buffers.row();
            double[][] merged = (double[][]) buffers.merged();
            double[] acc = (double[]) buffers.delta();
            double[] back = (double[]) buffers.back();
            int mark = record.size;
            int c = i * rank;
            for (int t = 0; t < row.length; t++) {
                double[] w = row[t];
                double[] m = merged[t];
                int len = w.length;
                read(i, t, w);
                delta(c, v[t], acc, len);
                double sd = s;
                for (int j = 0; j < len; j++) {
                    double d = sd * acc[j];
                    double mj = w[j] + d;
                    m[j] = mj;
                    back[j] = mj - d;
                }
                int linear = i * cols + t * TILE;
                for (int j = Arrays.mismatch(back, 0, len, w, 0, len); j >= 0; ) {
                    if (!Double.isFinite(m[j])) {
                        record.size = mark;
                        return new Failure(i, t * TILE + j, w[j], sd * acc[j]);
                    }
                    record.add(linear + j, Double.doubleToRawLongBits(w[j]));
                    int next = j + 1 >= len ? -1 : Arrays.mismatch(back, j + 1, len, w, j + 1, len);
                    j = next < 0 ? -1 : j + 1 + next;
                }
            }
            for (int t = 0; t < row.length; t++) {
                write(i, t, merged[t]);
            }
            return null;
        }

        @Override
        void unmergeRows(int from, int to, Record record, int cursor, Rows buffers) {
            double[][] row = (double[][]) buffers.row();
            double[] acc = (double[]) buffers.delta();
            for (int i = from; i < to; i++) {
                int c = i * rank;
                for (int t = 0; t < row.length; t++) {
                    double[] w = row[t];
                    int len = w.length;
                    read(i, t, w);
                    delta(c, v[t], acc, len);
                    double sd = s;
                    for (int j = 0; j < len; j++) {
                        w[j] = w[j] - sd * acc[j];
                    }
                    int start = i * cols + t * TILE;
                    while (cursor < record.size && record.index[cursor] < start + len) {
                        w[record.index[cursor] - start] = Double.longBitsToDouble(record.bits[cursor]);
                        cursor++;
                    }
                    write(i, t, w);
                }
            }
        }
    }
}
