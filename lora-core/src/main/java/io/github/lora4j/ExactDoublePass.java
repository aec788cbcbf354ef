package io.github.lora4j;

import java.nio.DoubleBuffer;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link ExactMerge}'s pass over a DOUBLE W. {@link ExactFloatPass} in double. */
final class ExactDoublePass extends ExactMerge.Pass {

    private final DoubleBuffer wBuf;
    private final double s;
    /** {@code coef[i·r + k]}: the coefficient of rank term {@code k} in row {@code i}. */
    private final double[] coef;
    /** {@code v[t][k]}: tile {@code t} of rank term {@code k}'s row. */
    private final double[][][] v;
    /** DoRA's factor per row of W ({@code [out, in]}), or null. */
    private double[] rowFactor;
    /** DoRA's factors by tile of columns (W {@code [in, out]}), or null. */
    private double[][] colFactor;

    ExactDoublePass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        super(w, a.rows(), fma);
        this.wBuf = w.data().asNioDouble();
        this.s = s;
        double[] af = (double[]) ExactMerge.elements(a, true);   // [r, in]
        double[] bf = (double[]) ExactMerge.elements(b, true);   // [out, r]
        int r = rank;
        int in = a.columns();
        if (!inOut) {
            coef = bf;                                           // B [out, r]: row i's coefficients are B[i, :]
        } else {
            coef = new double[in * r];                            // A^T [in, r]
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
                    int col = t * ExactMerge.TILE + j;
                    tile[j] = inOut ? bf[col * r + k] : af[k * in + col];   // B[:, k] or A[k, :]
                }
                v[t][k] = tile;
            }
        }
    }

    /** One thread's buffers: W's row and the merged row by tile, a tile's Δ and its round trip. */
    private static final class Buffers extends ExactMerge.Rows {
        final double[][] row;
        final double[][] merged;
        final double[] acc;
        final double[] back;

        Buffers(int[] tileLength) {
            super(tileLength);
            acc = new double[width];
            back = new double[width];
            row = new double[tileLength.length][];
            merged = new double[tileLength.length][];
            for (int t = 0; t < tileLength.length; t++) {
                row[t] = new double[tileLength[t]];
                merged[t] = new double[tileLength[t]];
            }
        }
    }

    @Override
    long factorBytes() {
        return 8L * (rank * ((long) rows + cols) + (rowFactor != null ? rows : colFactor != null ? cols : 0));
    }

    @Override
    void scaleOutputs(double[] c, boolean inOut) {
        if (!inOut) {
            rowFactor = new double[rows];
            for (int i = 0; i < rows; i++) {
                rowFactor[i] = c[i];
            }
            return;
        }
        colFactor = new double[tileLength.length][];
        for (int t = 0; t < tileLength.length; t++) {
            colFactor[t] = new double[tileLength[t]];
            for (int j = 0; j < tileLength[t]; j++) {
                colFactor[t][j] = c[t * ExactMerge.TILE + j];
            }
        }
    }

    @Override
    ExactMerge.Rows rowBuffers() {
        return new Buffers(tileLength);
    }

    /** {@link ExactFloatPass}'s Δ in double. */
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
            java.util.Arrays.fill(acc, 0, len, 0.0);
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
        int j0 = t * ExactMerge.TILE;
        if (colStride == 1) {
            wBuf.get(at(i, j0), tile, 0, tile.length);
        } else {
            for (int j = 0; j < tile.length; j++) {
                tile[j] = wBuf.get(at(i, j0 + j));
            }
        }
    }

    private void write(int i, int t, double[] tile) {
        int j0 = t * ExactMerge.TILE;
        if (colStride == 1) {
            wBuf.put(at(i, j0), tile, 0, tile.length);
        } else {
            for (int j = 0; j < tile.length; j++) {
                wBuf.put(at(i, j0 + j), tile[j]);
            }
        }
    }

    @Override
    ExactMerge.Failure mergeRow(int i, MergeRecord record, ExactMerge.Rows rows) {
        Buffers buffers = (Buffers) rows;
        double[] acc = buffers.acc;
        double[] back = buffers.back;
        int[] pos = buffers.pos;
        int mark = record.size();
        int c = i * rank;
        for (int t = 0; t < buffers.row.length; t++) {
            double[] w = buffers.row[t];
            double[] m = buffers.merged[t];
            int len = w.length;
            read(i, t, w);
            delta(c, v[t], acc, len);
            double sf = s;
            // The merged value and its round trip m - d, in one branch-free loop the JIT vectorises.
            if (rowFactor == null && colFactor == null) {
                for (int j = 0; j < len; j++) {
                    double d = sf * acc[j];
                    double mj = w[j] + d;
                    m[j] = mj;
                    back[j] = mj - d;
                }
            } else if (rowFactor != null) {
                double f = rowFactor[i];                           // DoRA: m = f·(w + d), back = m / f − d
                for (int j = 0; j < len; j++) {
                    double d = sf * acc[j];
                    double mj = f * (w[j] + d);
                    m[j] = mj;
                    back[j] = mj / f - d;
                }
            } else {
                double[] f = colFactor[t];
                for (int j = 0; j < len; j++) {
                    double d = sf * acc[j];
                    double mj = f[j] * (w[j] + d);
                    m[j] = mj;
                    back[j] = mj / f[j] - d;
                }
            }
            // The elements whose round trip misses their bits (w is finite, never NaN, so the double comparison is a
            // bit comparison here). A non-finite m always misses (its round trip is infinite or NaN), so the
            // finiteness check lives here too.
            int linear = i * cols + t * ExactMerge.TILE;
            for (int q = 0, count = ExactMerge.misses(back, w, len, pos); q < count; q++) {
                int j = pos[q];
                if (!Double.isFinite(m[j])) {
                    record.truncate(mark);
                    return new ExactMerge.Failure(i, t * ExactMerge.TILE + j, w[j], sf * acc[j]);
                }
                record.add(linear + j, Double.doubleToRawLongBits(w[j]));
            }
        }
        for (int t = 0; t < buffers.row.length; t++) {
            write(i, t, buffers.merged[t]);
        }
        return null;
    }

    @Override
    int unmergeRow(int i, MergeRecord record, int cursor, ExactMerge.Rows rows) {
        Buffers buffers = (Buffers) rows;
        double[] acc = buffers.acc;
        int c = i * rank;
        for (int t = 0; t < buffers.row.length; t++) {
            double[] w = buffers.row[t];
            int len = w.length;
            read(i, t, w);
            delta(c, v[t], acc, len);
            double sf = s;
            if (rowFactor == null && colFactor == null) {
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] - sf * acc[j];
                }
            } else if (rowFactor != null) {
                double f = rowFactor[i];
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] / f - sf * acc[j];
                }
            } else {
                double[] f = colFactor[t];
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] / f[j] - sf * acc[j];
                }
            }
            int start = i * cols + t * ExactMerge.TILE;
            while (cursor < record.size() && record.index(cursor) < start + len) {
                w[record.index(cursor) - start] = Double.longBitsToDouble(record.bits(cursor));
                cursor++;
            }
            write(i, t, w);
        }
        return cursor;
    }
}
