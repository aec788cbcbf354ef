package io.github.lora4j;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.indexing.SpecifiedIndex;

/**
 * The seam through which the numeric calls of {@link LoraLinear}'s hot paths pass (forward, backward, zeroGrad, the
 * mixed batch's products): the layer says what, this class says how. DJL's {@code NDArrayEx} and EJML's
 * {@code CommonOps_DDRM} are the models. {@link LoraConv2d} computes through a {@code LoraLinear} and so through this
 * class. Not every numeric call does: the EXACT merge's {@code Δ} is a Java pass of its own ({@code ExactFloatPass},
 * {@code ExactDoublePass}), and {@link LoraEmbedding}'s row gathers are ND4J ops ({@code Nd4j.pullRows}); its thin
 * products pass here pinned to the ND4J route (on the direct route a FLOAT embedding would differ from its earlier
 * results by an ulp, and a lookup of one id from the same id inside a batch).
 *
 * <h2>Two routes</h2>
 * <ul>
 *   <li><b>Direct</b>: on ND4J's CPU backend, with FLOAT or DOUBLE arrays whose inner stride is 1 (row-major) or whose
 *       outer stride is 1 (column-major, passed to BLAS as a transpose flag), gemm goes straight to the OpenBLAS that
 *       nd4j-native ships ({@code org.bytedeco.openblas.global.openblas_nolapack}, the very binding ND4J's own
 *       {@code CpuLevel3} calls), on the arrays' host pointers. Element work (bias rows, zeroing, dropout masks) is
 *       a Java loop or a {@code memset} over host memory. No ND4J op runs, so OpenBLAS's threads never fight
 *       libnd4j's OpenMP threads for the cores, and no op dispatch (about 8 µs per call) is paid.</li>
 *   <li><b>Fallback</b>: anywhere else (another backend such as CUDA, an unusual layout, another data type),
 *       {@code Nd4j.gemm} and ND4J element-wise ops, as before.</li>
 * </ul>
 * The direct route is detected once, at class load: the backend class must be ND4J's
 * {@code org.nd4j.linalg.cpu.nativecpu.CpuBackend} and the bytedeco OpenBLAS binding must load. lora-core compiles
 * against that binding as a {@code provided} dependency only; its classes are touched only inside
 * {@link OpenBlas}, which the JVM loads on first use, that is only after the detection succeeded. Set the system
 * property {@value #FALLBACK_PROPERTY}{@code =true} to force the fallback everywhere.
 *
 * <p>Both routes compute the same formulas with the same operand order; they agree to rounding (usually bitwise),
 * which the tests check.
 */
final class Kernels {

    /** System property that forces the ND4J fallback route (for diagnosis): {@value}. */
    static final String FALLBACK_PROPERTY = "lora4j.blas.fallback";

    private static final boolean AVAILABLE = detect();

    /** Test switch: true sends every call down the ND4J fallback route. */
    private static volatile boolean forcedFallback = Boolean.getBoolean(FALLBACK_PROPERTY);

    private Kernels() {
    }

    private static boolean detect() {
        try {
            if (!"org.nd4j.linalg.cpu.nativecpu.CpuBackend".equals(Nd4j.getBackend().getClass().getName())) {
                return false;
            }
            Class.forName("org.bytedeco.openblas.global.openblas_nolapack");
            return OpenBlas.selfTest();
        } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
            return false;
        }
    }

    /** Whether the direct OpenBLAS route exists in this process (CPU backend, binding present). */
    static boolean directAvailable() {
        return AVAILABLE;
    }

    /** Whether calls take the direct route now. */
    static boolean direct() {
        return AVAILABLE && !forcedFallback;
    }

    /** Package-private switch for tests and diagnosis: true forces the ND4J fallback route. */
    static void forceFallback(boolean fallback) {
        forcedFallback = fallback;
    }

    /** A short name of the route calls take now, for reports. */
    static String route() {
        return direct() ? "direct OpenBLAS (" + OpenBlas.config() + ")" : "ND4J fallback";
    }

    // ---------------------------------------------------------------- BLAS

    /** {@code c = alpha·op(a)·op(b) + beta·c}, {@code op} a transpose where the flag says so. */
    static void gemm(INDArray a, INDArray b, INDArray c, boolean transA, boolean transB, double alpha, double beta) {
        gemm(direct(), a, b, c, transA, transB, alpha, beta);
    }

    /** {@link #gemm(INDArray, INDArray, INDArray, boolean, boolean, double, double)} on a given route. */
    static void gemm(boolean directRoute, INDArray a, INDArray b, INDArray c, boolean transA, boolean transB,
                     double alpha, double beta) {
        if (directRoute && AVAILABLE && OpenBlas.gemm(a, b, c, transA, transB, alpha, beta)) {
            return;
        }
        Nd4j.gemm(a, b, c, transA, transB, alpha, beta);
    }

    /**
     * The base product {@code y = x W^T + b} ({@code y = x W + b} when {@code wTransposed} is false, W stored
     * {@code [in, out]}), written into {@code y [n, out]}. Direct: {@code y} is filled with the bias rows, then one
     * gemm accumulates into it ({@code beta = 1}), as PyTorch's {@code addmm} does.
     */
    static void linear(INDArray x, INDArray w, boolean wTransposed, INDArray bias, INDArray y) {
        if (bias != null && direct() && rowMajorContiguous(y) && rowMajorContiguous(bias)
                && OpenBlas.gemmPossible(x, w, y)) {
            fillRows(y, bias);
            gemm(x, w, y, false, wTransposed, 1.0, 1.0);
            return;
        }
        gemm(x, w, y, false, wTransposed, 1.0, 0.0);
        if (bias != null) {
            y.addiRowVector(bias);
        }
    }

    /**
     * Whether a gemm can accumulate into {@code c} in place: direct, any row-major layout (a row-strided view too);
     * through ND4J, only a contiguous c-order array (ND4J refuses other views as gemm outputs).
     */
    static boolean accumulatesInPlace(INDArray c) {
        return c.rank() == 2 && (direct() ? OpenBlas.rowMajorLd(c) > 0 : rowMajorContiguous(c));
    }

    /** Sets every element of each array to +0 (a memset on the direct route). */
    static void zero(INDArray... arrays) {
        for (INDArray a : arrays) {
            if (direct() && rowMajorContiguous(a)) {
                Pointer.memset(a.data().addressPointer(), 0, a.length() * a.dataType().width());
            } else {
                a.assign(0);
            }
        }
    }

    // ---------------------------------------------------------------- blocks (mixed batches)

    /**
     * A row-major matrix inside an array's memory, for the mixed batch's gathered products: {@code rows × cols},
     * element {@code (i, j)} at {@code offset + i·ld + j} of {@code array}'s buffer (from its first element). The
     * array must be FLOAT or DOUBLE and its elements must lie densely in row-major order ({@link #rowMajorContiguous}),
     * which {@link #of} checks. On the direct route {@code host} is the buffer's host address, resolved once when the
     * block of the whole array is made (ND4J's {@code addressPointer()} costs about a microsecond, more than a small
     * gemv), so a sub-block names a region and the products on it allocate no ND4J object.
     *
     * @param array  the array whose memory holds the matrix (kept so the memory stays alive)
     * @param host   its host address on the direct route, else null
     * @param offset element offset of {@code (0, 0)} from the array's first element
     * @param rows   rows of the matrix
     * @param cols   columns of the matrix
     * @param ld     elements between the starts of two rows, at least {@code cols}
     */
    record Block(INDArray array, Pointer host, long offset, int rows, int cols, int ld) {

        /** The whole of a 2-D row-major contiguous array, {@code [rows, cols]}. */
        static Block of(INDArray a) {
            if (a.rank() != 2 || !rowMajorContiguous(a)) {
                throw new IllegalArgumentException("a block needs a 2-D row-major contiguous array, got "
                        + Arrays.toString(a.shape()) + " with strides " + Arrays.toString(a.stride()));
            }
            return new Block(a, host(a), 0, Math.toIntExact(a.rows()), Math.toIntExact(a.columns()),
                    Math.toIntExact(Math.max(1, a.columns())));
        }

        /** A dense {@code [rows, cols]} matrix (leading dimension {@code cols}) from element {@code offset} of {@code a}. */
        static Block dense(INDArray a, long offset, int rows, int cols) {
            return new Block(a, host(a), offset, rows, cols, Math.max(1, cols));
        }

        private static Pointer host(INDArray a) {
            return direct() ? a.data().addressPointer() : null;
        }

        /** The top-left {@code [rows, cols]} of this matrix (same leading dimension). */
        Block top(int rows, int cols) {
            return new Block(array, host, offset, rows, cols, ld);
        }

        /** Rows {@code [first, first + count)} of this matrix. */
        Block rows(int first, int count) {
            return new Block(array, host, offset + (long) first * ld, count, cols, ld);
        }

        /** The matrix as an ND4J view (the fallback route's operand); shares the memory. */
        INDArray view() {
            return Nd4j.create(array.data(), new long[] {rows, cols}, new long[] {ld, 1}, offset, 'c');
        }
    }

    /**
     * {@code c = alpha·op(a)·op(b) + beta·c} on blocks: {@code op(a) [m, k]}, {@code op(b) [k, n]}, {@code c [m, n]}
     * (shapes as the blocks say; all of one data type). Direct: cblas on the host pointers at the blocks' offsets, no
     * ND4J object; a product with one output row or column is a gemv kept on the calling thread (see
     * {@link #SINGLE_THREAD_GEMV_ELEMENTS}). Fallback: {@code Nd4j.gemm} on views.
     */
    static void gemm(Block a, boolean transA, Block b, boolean transB, Block c, double alpha, double beta) {
        int k = transA ? a.rows() : a.cols();
        if ((transA ? a.cols() : a.rows()) != c.rows() || (transB ? b.rows() : b.cols()) != c.cols()
                || (transB ? b.cols() : b.rows()) != k) {
            throw new IllegalArgumentException("block gemm: op(a) " + (transA ? a.cols() : a.rows()) + "×" + k
                    + ", op(b) " + (transB ? b.cols() : b.rows()) + "×" + (transB ? b.rows() : b.cols()) + ", c "
                    + c.rows() + "×" + c.cols());
        }
        if (c.rows() == 0 || c.cols() == 0) {
            return;
        }
        if (hostRoute(a, b) && hostRoute(c, c)) {
            OpenBlas.gemm(a, transA, b, transB, c, alpha, beta);
            return;
        }
        INDArray cv = c.view();
        if (c.rows() == 1 || c.ld() == c.cols()) {
            Nd4j.gemm(a.view(), b.view(), cv, transA, transB, alpha, beta);
        } else {
            // ND4J writes only into contiguous outputs.
            INDArray t = cv.dup('c');
            Nd4j.gemm(a.view(), b.view(), t, transA, transB, alpha, beta);
            cv.assign(t);
        }
    }

    /**
     * Elements of the matrix of a gemv below which OpenBLAS runs it on the calling thread: {@code 2304 ×
     * GEMM_MULTITHREAD_THRESHOLD} (4 in the bundled build), the test in its {@code interface/gemv.c}. Above it every
     * call wakes the other BLAS threads; for a rank-8 adapter's {@code [8, 4096]} that costs 10–20 µs a call against
     * about 2 µs of work (measured by {@code MixedRowsProbe}). The mixed batch's gemvs are cut into pieces below it, by
     * whole output elements, so each output is the same dot product as in one call.
     */
    static final int SINGLE_THREAD_GEMV_ELEMENTS = 2304 * 4;

    /** The BLAS calls of a gemv with {@code outputs} dot products (or axpys) of length {@code inner}, cut as above. */
    static int gemvPieces(long outputs, long inner) {
        long piece = Math.max(1, (SINGLE_THREAD_GEMV_ELEMENTS - 1) / Math.max(1, inner));
        return (int) ((outputs + piece - 1) / piece);
    }

    /**
     * Row {@code j} of {@code dst} becomes row {@code rows[j]} of {@code src} (same width and type; {@code dst} has
     * at least {@code rows.length} rows). Direct: one BLAS copy per row; fallback: one {@code pullRows} and one assign,
     * whatever the number of rows.
     */
    static void gatherRows(Block src, int[] rows, Block dst) {
        if (rows.length == 0) {
            return;
        }
        if (hostRoute(src, dst)) {
            for (int j = 0; j < rows.length; j++) {
                OpenBlas.copyRow(src, rows[j], dst, j, false);
            }
            return;
        }
        dst.top(rows.length, dst.cols()).view().assign(Nd4j.pullRows(src.view(), 1, rows));
    }

    /**
     * Row {@code rows[j]} of {@code dst} becomes row {@code j} of {@code src}, or gets it added when {@code add}
     * ({@code rows} distinct): the inverse of {@link #gatherRows}. Direct: one BLAS copy or axpy per row; fallback: a
     * few ND4J ops through an index of the rows, whatever their number.
     */
    static void scatterRows(Block src, int[] rows, Block dst, boolean add) {
        if (rows.length == 0) {
            return;
        }
        if (hostRoute(src, dst)) {
            for (int j = 0; j < rows.length; j++) {
                OpenBlas.copyRow(src, j, dst, rows[j], add);
            }
            return;
        }
        INDArray d = dst.view();
        INDArrayIndex[] at = {new SpecifiedIndex(Arrays.stream(rows).asLongStream().toArray()), NDArrayIndex.all()};
        INDArray value = src.top(rows.length, src.cols()).view();
        d.put(at, add ? d.get(at).add(value) : value);
    }

    private static boolean hostRoute(Block a, Block b) {
        return a.host() != null && b.host() != null && direct();
    }

    // ---------------------------------------------------------------- shapes

    /**
     * Folds {@code [..., width]} into a c-order {@code [n, width]} (a view when the input is c-contiguous). A c-order
     * {@code [n, width]} array that is no view comes back as it is: a reshape builds a new shape descriptor, a few µs
     * that a small layer's whole step cannot afford.
     */
    static INDArray fold(INDArray a, long width) {
        if (a.rank() == 2 && a.columns() == width && a.ordering() == 'c' && !a.isView()) {
            return a;
        }
        return a.reshape('c', a.length() / width, width);
    }

    /** {@code shape} with its last dimension replaced by {@code last}. */
    static long[] withLast(long[] shape, long last) {
        long[] s = shape.clone();
        s[s.length - 1] = last;
        return s;
    }

    // ---------------------------------------------------------------- element work over host memory

    /** {@code dst = x ⊙ m} for a 0/1 mask {@code m} ({@code kept[i]} true where {@code m = 1}); same shape. */
    static void mask(INDArray x, boolean[] kept, INDArray dst) {
        if (direct() && rowMajorContiguous(x) && rowMajorContiguous(dst)) {
            int n = kept.length;
            if (x.dataType() == DataType.DOUBLE) {
                DoubleBuffer xb = doubles(x);
                DoubleBuffer db = doubles(dst);
                for (int i = 0; i < n; i++) {
                    db.put(i, xb.get(i) * (kept[i] ? 1.0 : 0.0));
                }
            } else {
                FloatBuffer xb = floats(x);
                FloatBuffer db = floats(dst);
                for (int i = 0; i < n; i++) {
                    db.put(i, xb.get(i) * (kept[i] ? 1f : 0f));
                }
            }
            return;
        }
        dst.assign(x.mul(maskArray(kept, x)));
    }

    /** {@code dst += t ⊙ m} for the 0/1 mask of {@link #mask}; {@code t} may be overwritten. */
    static void addMasked(INDArray dst, INDArray t, boolean[] kept) {
        if (direct() && rowMajorContiguous(dst) && rowMajorContiguous(t)) {
            int n = kept.length;
            if (dst.dataType() == DataType.DOUBLE) {
                DoubleBuffer db = doubles(dst);
                DoubleBuffer tb = doubles(t);
                for (int i = 0; i < n; i++) {
                    db.put(i, db.get(i) + tb.get(i) * (kept[i] ? 1.0 : 0.0));
                }
            } else {
                FloatBuffer db = floats(dst);
                FloatBuffer tb = floats(t);
                for (int i = 0; i < n; i++) {
                    db.put(i, db.get(i) + tb.get(i) * (kept[i] ? 1f : 0f));
                }
            }
            return;
        }
        dst.addi(t.muli(maskArray(kept, t)));
    }

    /** {@code u ⊙= f} element by element, {@code f} given in row-major order over u's c-order elements. */
    static void multiply(INDArray u, double[] f) {
        if (!(direct() && rowMajorContiguous(u))) {
            u.muli(Nd4j.createFromArray(f).castTo(u.dataType()).reshape('c', u.shape()));
            return;
        }
        if (u.dataType() == DataType.DOUBLE) {
            DoubleBuffer ub = doubles(u);
            for (int i = 0; i < f.length; i++) {
                ub.put(i, ub.get(i) * f[i]);
            }
        } else {
            FloatBuffer ub = floats(u);
            for (int i = 0; i < f.length; i++) {
                ub.put(i, ub.get(i) * (float) f[i]);
            }
        }
    }

    // ---------------------------------------------------------------- DoRA's column work

    /**
     * {@code ‖W_j‖²} per output feature {@code j}, in double: of each row of {@code w [out, in]}, or of each column of
     * {@code w [in, out]} when {@code inOut}. Once per DoRA adapter, not on the hot path.
     */
    static double[] rowSquares(INDArray w, boolean inOut) {
        int rows = Math.toIntExact(w.rows());
        int cols = Math.toIntExact(w.columns());
        double[] sq = new double[inOut ? cols : rows];
        double[] row = new double[cols];
        INDArray c = rowMajorContiguous(w) ? w : w.dup('c');
        for (int i = 0; i < rows; i++) {
            readRow(c, i, row);
            if (inOut) {
                for (int j = 0; j < cols; j++) {
                    sq[j] += row[j] * row[j];
                }
            } else {
                double sum = 0;
                for (int j = 0; j < cols; j++) {
                    sum += row[j] * row[j];
                }
                sq[i] = sum;
            }
        }
        return sq;
    }

    /** The elements of a FLOAT or DOUBLE array in row-major order, as doubles (a copy). */
    static double[] readDoubles(INDArray x) {
        if (direct() && rowMajorContiguous(x)) {
            int n = Math.toIntExact(x.length());
            double[] out = new double[n];
            if (x.dataType() == DataType.DOUBLE) {
                doubles(x).get(0, out);
            } else {
                float[] f = new float[n];
                floats(x).get(0, f);
                for (int i = 0; i < n; i++) {
                    out[i] = f[i];
                }
            }
            return out;
        }
        return x.dup('c').castTo(DataType.DOUBLE).data().asDouble();
    }

    /** Row {@code i} of a row-major contiguous FLOAT or DOUBLE matrix into {@code row} (widened). */
    private static void readRow(INDArray m, int i, double[] row) {
        int cols = row.length;
        if (direct()) {
            if (m.dataType() == DataType.DOUBLE) {
                doubles(m).get(i * cols, row, 0, cols);
            } else {
                FloatBuffer fb = floats(m);
                for (int j = 0; j < cols; j++) {
                    row[j] = fb.get(i * cols + j);
                }
            }
            return;
        }
        double[] v = m.getRow(i).dup('c').castTo(DataType.DOUBLE).data().asDouble();
        System.arraycopy(v, 0, row, 0, cols);
    }

    /**
     * {@code dst = src ⊙ c + bias} column by column ({@code c [out]} per column, {@code bias [1, out]} or null),
     * computed in double and rounded once; {@code dst} may be {@code src}. DoRA's output {@code y = c ⊙ q + b}.
     */
    static void scaleColumns(INDArray src, double[] c, INDArray bias, INDArray dst) {
        int out = c.length;
        if (direct() && rowMajorContiguous(src) && rowMajorContiguous(dst) && (bias == null || rowMajorContiguous(bias))) {
            int n = Math.toIntExact(src.length() / out);
            double[] b = bias == null ? new double[out] : readDoubles(bias);
            if (src.dataType() == DataType.DOUBLE) {
                DoubleBuffer sb = doubles(src);
                DoubleBuffer db = doubles(dst);
                double[] row = new double[out];
                for (int i = 0; i < n; i++) {
                    sb.get(i * out, row, 0, out);
                    for (int j = 0; j < out; j++) {
                        row[j] = row[j] * c[j] + b[j];
                    }
                    db.put(i * out, row, 0, out);
                }
            } else {
                FloatBuffer sb = floats(src);
                FloatBuffer db = floats(dst);
                float[] row = new float[out];
                for (int i = 0; i < n; i++) {
                    sb.get(i * out, row, 0, out);
                    for (int j = 0; j < out; j++) {
                        row[j] = (float) (row[j] * c[j] + b[j]);
                    }
                    db.put(i * out, row, 0, out);
                }
            }
            return;
        }
        INDArray cv = Nd4j.createFromArray(c).castTo(src.dataType()).reshape(1, out);
        INDArray r = src.mulRowVector(cv);
        if (bias != null) {
            r.addiRowVector(bias);
        }
        dst.assign(r);
    }

    /**
     * DoRA's training forward with dropout: {@code y += (c − 1) ⊙ t1 + c ⊙ t2} column by column, then
     * {@code t1 += t2} (so {@code t1} holds {@code q}, the term {@code dL/dm} needs). All {@code [n, out]}.
     */
    static void addDoraDropout(INDArray y, INDArray t1, INDArray t2, double[] c) {
        int out = c.length;
        if (direct() && rowMajorContiguous(y) && rowMajorContiguous(t1) && rowMajorContiguous(t2)) {
            int n = Math.toIntExact(y.length() / out);
            if (y.dataType() == DataType.DOUBLE) {
                DoubleBuffer yb = doubles(y);
                DoubleBuffer ab = doubles(t1);
                DoubleBuffer bb = doubles(t2);
                double[] yr = new double[out];
                double[] ar = new double[out];
                double[] br = new double[out];
                for (int i = 0; i < n; i++) {
                    yb.get(i * out, yr, 0, out);
                    ab.get(i * out, ar, 0, out);
                    bb.get(i * out, br, 0, out);
                    for (int j = 0; j < out; j++) {
                        yr[j] += (c[j] - 1) * ar[j] + c[j] * br[j];
                        ar[j] += br[j];
                    }
                    yb.put(i * out, yr, 0, out);
                    ab.put(i * out, ar, 0, out);
                }
            } else {
                FloatBuffer yb = floats(y);
                FloatBuffer ab = floats(t1);
                FloatBuffer bb = floats(t2);
                float[] yr = new float[out];
                float[] ar = new float[out];
                float[] br = new float[out];
                for (int i = 0; i < n; i++) {
                    yb.get(i * out, yr, 0, out);
                    ab.get(i * out, ar, 0, out);
                    bb.get(i * out, br, 0, out);
                    for (int j = 0; j < out; j++) {
                        yr[j] = (float) (yr[j] + ((c[j] - 1) * ar[j] + c[j] * br[j]));
                        ar[j] += br[j];
                    }
                    yb.put(i * out, yr, 0, out);
                    ab.put(i * out, ar, 0, out);
                }
            }
            return;
        }
        double[] cm1 = new double[out];
        for (int j = 0; j < out; j++) {
            cm1[j] = c[j] - 1;
        }
        INDArray cv = Nd4j.createFromArray(c).castTo(y.dataType()).reshape(1, out);
        INDArray cm = Nd4j.createFromArray(cm1).castTo(y.dataType()).reshape(1, out);
        y.addi(t1.mulRowVector(cm)).addi(t2.mulRowVector(cv));
        t1.addi(t2);
    }

    /** {@code acc[j] += Σ_i g_ij·q_ij / norm_j}: DoRA's {@code dL/dm} over {@code g}, {@code q [n, out]}. */
    static void addColumnDots(INDArray g, INDArray q, double[] norms, INDArray acc) {
        int out = norms.length;
        double[] sums = new double[out];
        if (direct() && rowMajorContiguous(g) && rowMajorContiguous(q)) {
            int n = Math.toIntExact(g.length() / out);
            double[] gr = new double[out];
            double[] qr = new double[out];
            for (int i = 0; i < n; i++) {
                readRow(g, i, gr);
                readRow(q, i, qr);
                for (int j = 0; j < out; j++) {
                    sums[j] += gr[j] * qr[j];
                }
            }
        } else {
            double[] v = g.castTo(DataType.DOUBLE).mul(q.castTo(DataType.DOUBLE)).sum(0).dup('c').data().asDouble();
            System.arraycopy(v, 0, sums, 0, out);
        }
        double[] old = readDoubles(acc);
        for (int j = 0; j < out; j++) {
            old[j] += sums[j] / norms[j];
        }
        write(acc, old);
    }

    /** Writes {@code v} (row-major) into a contiguous FLOAT or DOUBLE array of the same length. */
    static void write(INDArray dst, double[] v) {
        if (direct() && rowMajorContiguous(dst)) {
            if (dst.dataType() == DataType.DOUBLE) {
                doubles(dst).put(0, v, 0, v.length);
            } else {
                FloatBuffer fb = floats(dst);
                for (int i = 0; i < v.length; i++) {
                    fb.put(i, (float) v[i]);
                }
            }
            return;
        }
        dst.assign(Nd4j.createFromArray(v).castTo(dst.dataType()).reshape(dst.shape()));
    }

    private static INDArray maskArray(boolean[] kept, INDArray like) {
        double[] m = new double[kept.length];
        for (int i = 0; i < m.length; i++) {
            m[i] = kept[i] ? 1.0 : 0.0;
        }
        return Nd4j.createFromArray(m).castTo(like.dataType()).reshape('c', like.shape());
    }

    /** Copies {@code bias [1, out]} into every row of {@code y [n, out]} (both row-major contiguous). */
    private static void fillRows(INDArray y, INDArray bias) {
        int out = Math.toIntExact(bias.length());
        int n = Math.toIntExact(y.length() / out);
        if (y.dataType() == DataType.DOUBLE) {
            double[] b = new double[out];
            doubles(bias).get(0, b);
            DoubleBuffer yb = doubles(y);
            for (int i = 0; i < n; i++) {
                yb.put(i * out, b);
            }
        } else {
            float[] b = new float[out];
            floats(bias).get(0, b);
            FloatBuffer yb = floats(y);
            for (int i = 0; i < n; i++) {
                yb.put(i * out, b);
            }
        }
    }

    /** Whether the elements of {@code a} lie densely in row-major order from its first element. */
    static boolean rowMajorContiguous(INDArray a) {
        long expected = 1;
        for (int d = a.rank() - 1; d >= 0; d--) {
            if (a.size(d) != 1 && a.stride(d) != expected) {
                return false;
            }
            expected *= a.size(d);
        }
        return true;
    }

    /** Host view of a row-major contiguous FLOAT array, from its first element. */
    static FloatBuffer floats(INDArray a) {
        return new FloatPointer(a.data().addressPointer()).position(0).limit(a.length()).asBuffer();
    }

    /** Host view of a row-major contiguous DOUBLE array, from its first element. */
    static DoubleBuffer doubles(INDArray a) {
        return new DoublePointer(a.data().addressPointer()).position(0).limit(a.length()).asBuffer();
    }

    /** The direct route's calls. Loaded by the JVM only when first used, that is after {@link #detect()} passed. */
    private static final class OpenBlas {

        private static final int ROW_MAJOR = org.bytedeco.openblas.global.openblas_nolapack.CblasRowMajor;
        private static final int NO_TRANS = org.bytedeco.openblas.global.openblas_nolapack.CblasNoTrans;
        private static final int TRANS = org.bytedeco.openblas.global.openblas_nolapack.CblasTrans;

        private OpenBlas() {
        }

        static String config() {
            return "cblas of org.bytedeco openblas_nolapack " + org.bytedeco.openblas.global.openblas_nolapack.OPENBLAS_VERSION.trim();
        }

        /** A 2×2 product through the binding, checked: proves the native library is the one we think. */
        static boolean selfTest() {
            INDArray a = Nd4j.createFromArray(new float[][] {{1, 2}, {3, 4}});
            INDArray b = Nd4j.createFromArray(new float[][] {{5, 6}, {7, 8}});
            INDArray c = Nd4j.create(DataType.FLOAT, 2, 2);
            if (!gemm(a, b, c, false, true, 1.0, 0.0)) {
                return false;
            }
            // a b^T = [[17, 23], [39, 53]]
            return c.getFloat(0, 0) == 17f && c.getFloat(0, 1) == 23f && c.getFloat(1, 0) == 39f
                    && c.getFloat(1, 1) == 53f;
        }

        /** Whether {@code y = x·op(w)} could go direct (types and layouts), for callers that prepare {@code y}. */
        static boolean gemmPossible(INDArray x, INDArray w, INDArray y) {
            DataType t = y.dataType();
            return (t == DataType.FLOAT || t == DataType.DOUBLE) && x.dataType() == t && w.dataType() == t
                    && x.rank() == 2 && w.rank() == 2 && y.rank() == 2 && rowMajorLd(y) > 0;
        }

        /**
         * {@code c = alpha·op(a)·op(b) + beta·c} through cblas, or false (nothing written) when the arrays do not
         * suit it: other data types, other ranks, mismatched shapes (ND4J then reports them), or an output that is
         * not row-major.
         */
        static boolean gemm(INDArray a, INDArray b, INDArray c, boolean transA, boolean transB, double alpha,
                            double beta) {
            DataType t = c.dataType();
            if ((t != DataType.FLOAT && t != DataType.DOUBLE) || a.dataType() != t || b.dataType() != t
                    || a.rank() != 2 || b.rank() != 2 || c.rank() != 2) {
                return false;
            }
            long m = c.rows();
            long n = c.columns();
            long k = transA ? a.rows() : a.columns();
            if ((transA ? a.columns() : a.rows()) != m || (transB ? b.rows() : b.columns()) != n
                    || (transB ? b.columns() : b.rows()) != k || m > Integer.MAX_VALUE || n > Integer.MAX_VALUE
                    || k > Integer.MAX_VALUE || k == 0) {
                return false;
            }
            int ldc = rowMajorLd(c);
            if (ldc < 1) {
                return false;
            }
            // An operand whose strides BLAS cannot express (neither is 1) is copied; the output never is.
            long[] la = layout(a);
            if (la == null) {
                a = a.dup('c');
                la = layout(a);
            }
            long[] lb = layout(b);
            if (lb == null) {
                b = b.dup('c');
                lb = layout(b);
            }
            if (m == 0 || n == 0) {
                return true;
            }
            // A column-major operand is the row-major transpose: flip its flag.
            int ta = transA != (la[0] == 1) ? TRANS : NO_TRANS;
            int tb = transB != (lb[0] == 1) ? TRANS : NO_TRANS;
            product(t, ta, tb, (int) m, (int) n, (int) k, alpha, a.data().addressPointer(), 0, (int) la[1],
                    b.data().addressPointer(), 0, (int) lb[1], beta, c.data().addressPointer(), 0, ldc, false);
            return true;
        }

        /** {@link Kernels#gemm(Block, boolean, Block, boolean, Block, double, double)} through cblas. */
        static void gemm(Block a, boolean transA, Block b, boolean transB, Block c, double alpha, double beta) {
            product(c.array().dataType(), transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, c.rows(), c.cols(),
                    transA ? a.rows() : a.cols(), alpha, a.host(), a.offset(), a.ld(), b.host(), b.offset(), b.ld(),
                    beta, c.host(), c.offset(), c.ld(), true);
        }

        /** {@code dst[to, :] = src[from, :]} ({@code +=} when {@code add}): one cblas copy or axpy. */
        static void copyRow(Block src, int from, Block dst, int to, boolean add) {
            int n = src.cols();
            long s = src.offset() + (long) from * src.ld();
            long d = dst.offset() + (long) to * dst.ld();
            if (src.array().dataType() == DataType.DOUBLE) {
                DoublePointer sp = new DoublePointer(src.host()).position(s);
                DoublePointer dp = new DoublePointer(dst.host()).position(d);
                if (add) {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_daxpy(n, 1.0, sp, 1, dp, 1);
                } else {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_dcopy(n, sp, 1, dp, 1);
                }
            } else {
                FloatPointer sp = new FloatPointer(src.host()).position(s);
                FloatPointer dp = new FloatPointer(dst.host()).position(d);
                if (add) {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_saxpy(n, 1f, sp, 1, dp, 1);
                } else {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_scopy(n, sp, 1, dp, 1);
                }
            }
        }

        /**
         * {@code c = alpha·op(a)·op(b) + beta·c} on row-major operands given as host pointers with element offsets
         * and leading dimensions, {@code op} per the cblas flags; gemv for one-row or one-column outputs, cut below
         * {@link #SINGLE_THREAD_GEMV_ELEMENTS} when {@code singleThreadGemv}.
         */
        private static void product(DataType t, int ta, int tb, int m, int n, int k, double alpha, Pointer a,
                                    long aOff, int lda, Pointer b, long bOff, int ldb, double beta, Pointer c,
                                    long cOff, int ldc, boolean singleThreadGemv) {
            // gemv for one-row or one-column outputs, where sgemm is slow. With beta != 0 only the dot-product form
            // (row-major NoTrans: y += alpha·(a·x), one rounding into y, as gemm): the other form adds the k terms
            // into y one by one, k roundings, which broke FAST merge's two-ulp round trip.
            boolean rows = n != 1 && (m == 1 || rowByRow(m));
            int vectorTrans = rows ? (tb == NO_TRANS ? TRANS : NO_TRANS) : ta;
            if ((rows || n == 1) && (beta == 0.0 || vectorTrans == NO_TRANS)) {
                for (int i = 0; i < (n == 1 ? 1 : m); i++) {
                    gemv(t, a, aOff, lda, ta, b, bOff, ldb, tb, c, cOff, ldc, i, n == 1 ? m : 1, n, k, alpha, beta,
                            singleThreadGemv);
                }
                return;
            }
            if (t == DataType.FLOAT) {
                org.bytedeco.openblas.global.openblas_nolapack.cblas_sgemm(ROW_MAJOR, ta, tb, m, n, k, (float) alpha,
                        new FloatPointer(a).position(aOff), lda, new FloatPointer(b).position(bOff), ldb,
                        (float) beta, new FloatPointer(c).position(cOff), ldc);
            } else {
                org.bytedeco.openblas.global.openblas_nolapack.cblas_dgemm(ROW_MAJOR, ta, tb, m, n, k, alpha,
                        new DoublePointer(a).position(aOff), lda, new DoublePointer(b).position(bOff), ldb, beta,
                        new DoublePointer(c).position(cOff), ldc);
            }
        }

        /**
         * Whether {@code c [m, n] = op(a)·op(b)} with a few rows is faster as one gemv per row. OpenBLAS 0.3.19's
         * sgemm is slow for a thin {@code op(a)}; measured here (2 cores, Zen 5, the kernel OpenBLAS picks itself),
         * {@code x·Wᵀ} for {@code W} 1024² takes 212 µs at m = 1 and 251 µs at m = 2 through sgemm against 98 µs per
         * row through sgemv, and the rows win at m = 2 for every size from 128² to 2048²; at m = 4 sgemm wins from
         * 512² on. (With {@code OPENBLAS_CORETYPE=Haswell} sgemv is 4× faster still and rows would win up to m = 8;
         * lora4j does not rely on that variable.)
         */
        private static boolean rowByRow(long m) {
            return m <= 2;
        }

        /**
         * One row {@code i} of a product through gemv (or, when {@code n == 1}, the whole column {@code c [m, 1]}):
         * OpenBLAS 0.3.19's sgemm takes 2–10× as long as sgemv for {@code [1, 1024] × [1024, 1024]} (212 µs against
         * 98 µs on the kernel it picks itself here, 277 against 35 µs on its Haswell kernel), which is the forward
         * pass and the input gradient of a layer fed one example at a time (decoding token by token). {@code a'} and {@code b'} are the operands as row-major matrices with
         * their flipped flags {@code ta}, {@code tb}, as for gemm.
         */
        private static void gemv(DataType t, Pointer a, long aOff, int lda, int ta, Pointer b, long bOff, int ldb,
                                 int tb, Pointer c, long cOff, int ldc, int i, int m, int n, int k, double alpha,
                                 double beta, boolean singleThread) {
            Pointer matrix;
            long matrixOffset;
            int trans;
            int rows;
            int cols;
            int ld;
            Pointer vector;
            long vectorOffset;
            int incx;
            long outOffset;
            int incy;
            if (m == 1) {
                // c[i, :]^T [n] = op(b)^T [n, k] · op(a)[i, :]^T [k]: b' is [k, n] (no flag) or [n, k] (flag).
                matrix = b;
                matrixOffset = bOff;
                ld = ldb;
                trans = tb == NO_TRANS ? TRANS : NO_TRANS;
                rows = tb == NO_TRANS ? k : n;
                cols = tb == NO_TRANS ? n : k;
                vector = a;
                vectorOffset = aOff + (ta == NO_TRANS ? (long) i * lda : i);   // row i of a' [m, k], or column i of a' [k, m]
                incx = ta == NO_TRANS ? 1 : lda;
                outOffset = cOff + (long) i * ldc;
                incy = 1;
            } else {
                // c [m] = op(a) [m, k] · op(b) [k]: a' is [m, k] (no flag) or [k, m] (flag).
                matrix = a;
                matrixOffset = aOff;
                ld = lda;
                trans = ta;
                rows = ta == NO_TRANS ? m : k;
                cols = ta == NO_TRANS ? k : m;
                vector = b;
                vectorOffset = bOff;
                incx = tb == NO_TRANS ? ldb : 1;   // b' [k, 1] or [1, k]
                outOffset = cOff;
                incy = ldc;
            }
            // Outputs are the matrix's rows (NoTrans: one dot product each) or its columns (Trans: axpy over the rows).
            int outputs = trans == NO_TRANS ? rows : cols;
            int inner = trans == NO_TRANS ? cols : rows;
            int pieces = singleThread ? Math.max(1, gemvPieces(outputs, inner)) : 1;
            int piece = Math.max(1, (outputs + pieces - 1) / pieces);
            for (int first = 0; first < outputs; first += piece) {
                int count = Math.min(piece, outputs - first);
                long mOff = matrixOffset + (trans == NO_TRANS ? (long) first * ld : first);
                long yOff = outOffset + (long) first * incy;
                int pr = trans == NO_TRANS ? count : rows;
                int pc = trans == NO_TRANS ? cols : count;
                if (t == DataType.FLOAT) {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_sgemv(ROW_MAJOR, trans, pr, pc, (float) alpha,
                            new FloatPointer(matrix).position(mOff), ld,
                            new FloatPointer(vector).position(vectorOffset), incx, (float) beta,
                            new FloatPointer(c).position(yOff), incy);
                } else {
                    org.bytedeco.openblas.global.openblas_nolapack.cblas_dgemv(ROW_MAJOR, trans, pr, pc, alpha,
                            new DoublePointer(matrix).position(mOff), ld,
                            new DoublePointer(vector).position(vectorOffset), incx, beta,
                            new DoublePointer(c).position(yOff), incy);
                }
            }
        }

        /** Leading dimension of a row-major matrix (inner stride 1), or -1. */
        private static int rowMajorLd(INDArray c) {
            long[] l = layout(c);
            return l == null || l[0] != 0 ? -1 : (int) l[1];
        }

        /**
         * How BLAS sees a matrix: {@code {0, ld}} row-major, {@code {1, ld}} column-major (its transpose is
         * row-major), or null when neither stride is 1.
         */
        private static long[] layout(INDArray x) {
            long rows = x.rows();
            long cols = x.columns();
            long s0 = x.stride(0);
            long s1 = x.stride(1);
            if (cols == 1 || s1 == 1) {
                long ld = rows == 1 ? Math.max(1, cols) : s0;
                if (ld >= Math.max(1, cols) && ld <= Integer.MAX_VALUE) {
                    return new long[] {0, ld};
                }
            }
            if (rows == 1 || s0 == 1) {
                long ld = cols == 1 ? Math.max(1, rows) : s1;
                if (ld >= Math.max(1, rows) && ld <= Integer.MAX_VALUE) {
                    return new long[] {1, ld};
                }
            }
            return null;
        }
    }
}
