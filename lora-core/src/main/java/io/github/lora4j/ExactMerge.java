package io.github.lora4j;

import java.util.Arrays;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Merge {@code W += Δ} (with {@code Δ = s·B·A}) so that the matching unmerge restores {@code W} bit for bit,
 * without a copy of {@code W}.
 *
 * <p>Why it works: {@code Δ} is computed in Java, by the very same code at merge and at unmerge, so both see
 * identical {@code Δ} values (Java arithmetic is IEEE with one rounding per operation, and {@link Math#fma} is
 * exactly rounded, on any thread and any JIT tier); the merge writes {@code m = fl(w + d)}, and the unmerge writes
 * {@code fl(m − d)}, which equals {@code w} for most elements. The merge evaluates that round trip in the same pass
 * and remembers the original bits of the elements where it does not hold (where {@code w + d} crosses into a
 * larger binade: a few per cent of the elements when {@code |Δ|} is a few per cent of {@code |W|}); the unmerge
 * patches exactly those. No BLAS call takes part, so the result does not depend on the BLAS, its threads or the
 * backend. (Δ by gemm blocks into a scratch, with the round trip checked in Java, was tried again: OpenBLAS's
 * threads keep spinning on the cores for a while after each call, so the Java pass that must follow each block ran
 * on one core, and a merge + unmerge pair at 4096², r = 8 took 29–33 ms against 16–20 ms for this pass. Tiles small
 * enough that OpenBLAS runs each call on the calling thread and wakes none of its workers, {@code M·N·K ≤ 2^18},
 * one stream of tiles per pass thread, were measured too: Δ alone, before any element work, cost 0.6–8.8× this
 * whole pass, 755 against 86–98 ms at 4096², r = 64, where the cap leaves one row per call; see
 * lora-benchmarks/results/2026-12-03-side-by-side-zen4.)
 *
 * <p>With {@link WeightLayout#IN_OUT} the same holds for {@code W^T += Δ^T}: row {@code j} of W is
 * {@code Σ_k A[k, j]·B[:, k]}.
 *
 * <p>Cost: one pass over {@code W}, reading and writing each element once, split by rows over up to
 * {@link #THREADS} threads of the common fork-join pool. Each row is handled in tiles of {@link #TILE} columns:
 * {@code d = s·Σ_k c_k·v_k} over the tile ({@code r} multiply-adds per element, four rank terms per loop, which
 * the JIT vectorises), then {@code m = w + d} and {@code m − d}, then a vectorised {@link Arrays#mismatch} scan for
 * the elements whose round trip misses. Every loop indexes all its arrays from 0: the JIT of JDK 17 does not
 * vectorise loops whose arrays are read at different offsets.
 * Memory: the factors as Java arrays ({@code r·(in + out)} elements), kept until the unmerge, a few row buffers
 * per thread during a pass, and 12 bytes per remembered element (int index, raw bits), trimmed after the merge.
 *
 * <p>DoRA ({@link #merge(INDArray, boolean, INDArray, INDArray, double, double[])}) writes
 * {@code m = fl(c·fl(w + d))} with {@code c = m_j / ‖W_j + s(BA)_j‖} of the element's output feature, rounded to W's
 * type (PEFT's {@code dora_factor * (W + Δ)}, two roundings), and its round trip is {@code fl(fl(m / c) − d)}. For
 * {@code c} near 1 (DoRA starts at exactly 1) the division undoes the product for all but a fraction of about
 * {@code |1 − c|} of the elements, so the record grows by that fraction over LoRA's; the factors are kept with the
 * pass, so the unmerge divides by the very same {@code c}.
 *
 * <p>W narrower than a tile is merged by hidden copies of the pass classes, one per width class
 * ({@link NarrowPasses}): the JIT sizes a loop for the trip counts it profiled first, so without them a 64-column W
 * merged after a 4096-column one ran its tile loops mostly scalar (a 64 × 64 pair: 26–37 against 14 µs).
 */
final class ExactMerge {

    /** Columns per tile: the tile's buffers and its {@code r} factor rows stay in the first- or second-level cache. */
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

    /** Where a merge met a non-finite result: the element, its value and the update. */
    record Failure(long row, int col, double w, double d) { }

    /** The way a merge computes Δ now. */
    static MergeRecord.Route route() {
        return Fma.INTRINSIC && !forcedMulAdd ? MergeRecord.Route.JAVA_FMA : MergeRecord.Route.JAVA_MUL_ADD;
    }

    /**
     * {@code W += s·B·A} exactly reversibly. If any merged element would be NaN or infinite, the rows already
     * written are restored bit for bit and an {@link IllegalStateException} names the element; {@code W} is then
     * as it was.
     */
    static MergeRecord merge(INDArray w, boolean inOut, INDArray a, INDArray b, double s) {
        return merge(w, inOut, a, b, s, null);
    }

    /**
     * DoRA's {@code W = c ⊙ (W + s·B·A)}, {@code c [out]} one factor per output feature (a row of W, or a column with
     * {@code inOut}), exactly reversibly; {@code c = null} is {@link #merge(INDArray, boolean, INDArray, INDArray,
     * double)}. Refusals as there.
     */
    static MergeRecord merge(INDArray w, boolean inOut, INDArray a, INDArray b, double s, double[] c) {
        if (w.length() > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("exact merge supports W of up to 2^31 - 9 elements, got " + w.length());
        }
        MergeRecord record = new MergeRecord(route());
        Pass pass = pass(w, inOut, a, b, s, record.route() == MergeRecord.Route.JAVA_FMA);
        if (c != null) {
            pass.scaleOutputs(c, inOut);
        }
        Failure failure = pass.merge(record);
        if (failure != null) {
            throw new IllegalStateException("merge would make W[" + failure.row() + ", " + failure.col()
                    + "] non-finite: W = " + failure.w() + ", s·(B·A) = " + failure.d() + " (out of " + w.rows() + "×"
                    + w.columns() + "); W left unchanged");
        }
        record.trim();
        record.keep(pass);
        return record;
    }

    /**
     * Reverses {@link #merge}: after it, {@code W} is bitwise what it was before the merge. It runs on the merge's own
     * pass, with its copy of the factors and the scale, so it computes the very same Δ whatever A, B and s are now.
     */
    static void unmerge(MergeRecord record) {
        record.pass().unmerge(record);
    }

    private static Pass pass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        Pass narrow = NarrowPasses.pass(w, inOut, a, b, s, fma);     // a copy of its own for W narrower than a tile
        if (narrow != null) {
            return narrow;
        }
        return w.dataType() == DataType.DOUBLE ? new ExactDoublePass(w, inOut, a, b, s, fma)
                : new ExactFloatPass(w, inOut, a, b, s, fma);
    }

    /**
     * The positions where {@code back} and {@code w} differ ({@link Arrays#mismatch}'s comparison: bits, with NaN
     * equal to NaN), ascending, into {@code pos}; their count. One vectorised scan per miss, about 8 ns each here:
     * cheaper than any per-element loop the JIT of JDK 17 makes of it (a branch-free compaction ran at 1 ns per
     * element, scalar), since misses are a few per cent of the elements at most.
     */
    static int misses(float[] back, float[] w, int len, int[] pos) {
        int count = 0;
        for (int j = Arrays.mismatch(back, 0, len, w, 0, len); j >= 0; ) {
            pos[count++] = j;
            int next = j + 1 >= len ? -1 : Arrays.mismatch(back, j + 1, len, w, j + 1, len);
            j = next < 0 ? -1 : j + 1 + next;
        }
        return count;
    }

    /** {@link #misses(float[], float[], int, int[])} in double. */
    static int misses(double[] back, double[] w, int len, int[] pos) {
        int count = 0;
        for (int j = Arrays.mismatch(back, 0, len, w, 0, len); j >= 0; ) {
            pos[count++] = j;
            int next = j + 1 >= len ? -1 : Arrays.mismatch(back, j + 1, len, w, j + 1, len);
            j = next < 0 ? -1 : j + 1 + next;
        }
        return count;
    }

    /** A c-order copy of a FLOAT or DOUBLE array's elements, as doubles or floats by {@code asDouble}. */
    static Object elements(INDArray x, boolean asDouble) {
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
    abstract static class Pass {
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

        /** Heap bytes of the factor copy: {@code r·(rows + cols)} elements, plus DoRA's {@code out} factors. */
        abstract long factorBytes();

        /**
         * Makes this a DoRA pass: element {@code (i, j)} becomes {@code c·(w + d)} with {@code c} the factor of its
         * output feature ({@code c[i]}, or {@code c[j]} with {@code inOut}), rounded to W's type.
         */
        abstract void scaleOutputs(double[] c, boolean inOut);

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
        Failure merge(MergeRecord record) {
            int[] bounds = chunks();
            int parts = bounds.length - 1;
            MergeRecord[] partRecords = new MergeRecord[parts];
            Failure[] failures = new Failure[parts];
            int[] stoppedAt = new int[parts];
            forEachChunk(parts, c -> {
                MergeRecord part = parts == 1 ? record : new MergeRecord(record.route());
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
                for (MergeRecord part : partRecords) {
                    record.addAll(part);
                }
            }
            return null;
        }

        /** Unmerges every row, patching the recorded elements. */
        void unmerge(MergeRecord record) {
            int[] bounds = chunks();
            forEachChunk(bounds.length - 1, c -> unmergeRows(bounds[c], bounds[c + 1], record,
                    record.lowerBound((long) bounds[c] * cols), rowBuffers()));
        }

        abstract Rows rowBuffers();

        /** Writes row {@code i} merged and returns null; or leaves it untouched and returns its first non-finite element. */
        abstract Failure mergeRow(int i, MergeRecord record, Rows buffers);

        /** Writes row {@code i} unmerged, patching from {@code record} at {@code cursor}; returns the next cursor. */
        abstract int unmergeRow(int i, MergeRecord record, int cursor, Rows buffers);

        /** Writes rows {@code [from, to)} unmerged, patching from {@code record} starting at {@code cursor}. */
        final void unmergeRows(int from, int to, MergeRecord record, int cursor, Rows buffers) {
            for (int i = from; i < to; i++) {
                cursor = unmergeRow(i, record, cursor, buffers);
            }
        }
    }

    /** One thread's buffers; the typed passes add W's row by tile, a tile's Δ and its round trip. */
    abstract static class Rows {
        /** The widest tile's length, {@code min(TILE, cols)}: a narrow W gets buffers of its own width. */
        final int width;
        /** Positions of the round-trip misses in a tile. */
        final int[] pos;

        Rows(int[] tileLength) {
            width = tileLength.length == 0 ? 0 : tileLength[0];
            pos = new int[width];
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
}
