package io.github.lora4j;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link LoraConv2d} against a convolution written out as loops in double, and its exact merge. */
class LoraConv2dTest {

    /** conv(x, k) + bias with stride and zero padding, by definition, in double: [n, out, oh, ow]. */
    private static double[][][][] conv(INDArray x, INDArray k, INDArray bias, int s, int p) {
        int n = (int) x.size(0);
        int c = (int) x.size(1);
        int h = (int) x.size(2);
        int w = (int) x.size(3);
        int o = (int) k.size(0);
        int kh = (int) k.size(2);
        int kw = (int) k.size(3);
        int oh = (h + 2 * p - kh) / s + 1;
        int ow = (w + 2 * p - kw) / s + 1;
        double[][][][] y = new double[n][o][oh][ow];
        for (int b = 0; b < n; b++) {
            for (int f = 0; f < o; f++) {
                for (int i = 0; i < oh; i++) {
                    for (int j = 0; j < ow; j++) {
                        double v = bias == null ? 0 : bias.getDouble(f);
                        for (int ch = 0; ch < c; ch++) {
                            for (int u = 0; u < kh; u++) {
                                for (int t = 0; t < kw; t++) {
                                    int yi = i * s + u - p;
                                    int xj = j * s + t - p;
                                    if (yi >= 0 && yi < h && xj >= 0 && xj < w) {
                                        v += x.getDouble(b, ch, yi, xj) * k.getDouble(f, ch, u, t);
                                    }
                                }
                            }
                        }
                        y[b][f][i][j] = v;
                    }
                }
            }
        }
        return y;
    }

    @Property(tries = 25)
    void forwardIsTheBaseConvolutionPlusTheScaledLowRankPath(@ForAll @IntRange(min = 1, max = 3) int c,
                                                            @ForAll @IntRange(min = 1, max = 4) int o,
                                                            @ForAll @IntRange(min = 1, max = 3) int k,
                                                            @ForAll @IntRange(min = 1, max = 2) int s,
                                                            @ForAll @IntRange(min = 0, max = 1) int p,
                                                            @ForAll long seed) {
        int r = 1 + Math.floorMod(seed, Math.min(o, c * k * k));
        INDArray w = gaussian(DataType.DOUBLE, seed, 1, o, c, k, k);
        INDArray bias = gaussian(DataType.DOUBLE, seed + 1, 1, o);
        LoraConv2d conv = LoraConv2d.base(w, bias, new int[] {s, s}, new int[] {p, p});
        conv.addAdapter("default", LoraConfig.builder().rank(r).alpha(2 * r).build());
        conv.setActiveAdapter("default");
        INDArray a = gaussian(DataType.DOUBLE, seed + 2, 1, r, c, k, k);
        INDArray b = gaussian(DataType.DOUBLE, seed + 3, 1, o, r, 1, 1);
        conv.setAdapterWeights("default", a, b);
        INDArray x = gaussian(DataType.DOUBLE, seed + 4, 1, 2, c, 5, 4);
        // Expected: conv(x, W) + b + s * conv1x1(conv(x, A), B), s = 2
        double[][][][] base = conv(x, w, bias, s, p);
        double[][][][] mid = conv(x, a, null, s, p);
        INDArray y = conv.forward(x);
        assertArrayEquals(new long[] {2, o, base[0][0].length, base[0][0][0].length}, y.shape());
        for (int n = 0; n < 2; n++) {
            for (int f = 0; f < o; f++) {
                for (int i = 0; i < base[n][f].length; i++) {
                    for (int j = 0; j < base[n][f][i].length; j++) {
                        double v = base[n][f][i][j];
                        for (int q = 0; q < r; q++) {
                            v += 2.0 * b.getDouble(f, q, 0, 0) * mid[n][q][i][j];
                        }
                        assertEquals(v, y.getDouble(n, f, i, j), 1e-10 * (1 + Math.abs(v)));
                    }
                }
            }
        }
    }

    @Test
    void mergeThenUnmergeRestoresTheKernelBitwiseAndTheMergedOutputMatches() {
        INDArray w = gaussian(DataType.FLOAT, 1, 1, 10, 5, 3, 3);
        long[] before = bits(w);
        LoraConv2d conv = LoraConv2d.base(w, null, new int[] {1, 1}, new int[] {1, 1});
        conv.addAdapter("default", LoraConfig.builder().rank(8).build());
        conv.setActiveAdapter("default");
        conv.setAdapterWeights("default", gaussian(DataType.FLOAT, 2, 1, 8, 5, 3, 3), gaussian(DataType.FLOAT, 3, 1, 10, 8, 1, 1));
        INDArray x = gaussian(DataType.FLOAT, 4, 1, 1, 5, 6, 6);
        INDArray unmerged = conv.forward(x);
        INDArray mergedKernel = conv.mergedWeight();
        conv.merge();
        assertArrayEquals(bits(mergedKernel), bits(w), "merge writes W + ΔW into the caller's kernel");
        assertEquals(0, conv.forward(x).sub(unmerged).amaxNumber().doubleValue(), 1e-4);
        conv.unmerge();
        assertArrayEquals(before, bits(w));
    }

    @Test
    void badKernelsAndInputsAreRefused() {
        INDArray w = gaussian(DataType.FLOAT, 1, 1, 4, 2, 3, 3);
        assertThrows(IllegalArgumentException.class, () -> LoraConv2d.base(w.permute(0, 1, 3, 2), null,
                new int[] {1, 1}, new int[] {0, 0}), "not c-order");
        assertThrows(IllegalArgumentException.class, () -> LoraConv2d.base(gaussian(DataType.FLOAT, 1, 1, 4, 2), null,
                new int[] {1, 1}, new int[] {0, 0}));
        LoraConv2d conv = LoraConv2d.base(w, null, new int[] {1, 1}, new int[] {0, 0});
        assertThrows(IllegalArgumentException.class, () -> conv.forward(gaussian(DataType.FLOAT, 2, 1, 1, 3, 5, 5)));
        assertThrows(IllegalArgumentException.class, () -> conv.forward(gaussian(DataType.FLOAT, 2, 1, 1, 2, 2, 2)));
        conv.addAdapter("x", LoraConfig.builder().rank(2).build());
        assertThrows(IllegalArgumentException.class, () -> conv.setAdapterWeights("x",
                gaussian(DataType.FLOAT, 3, 1, 2, 2, 3, 3), gaussian(DataType.FLOAT, 4, 1, 4, 2)));
    }

    /** Issue 29 item 18: a huge padding failed in native allocation (or with a negative length) instead of a refusal. */
    @Test
    void aPaddingWhoseBuffersCannotExistIsRefusedBeforeAnythingIsAllocated() {
        LoraConv2d conv = LoraConv2d.base(gaussian(DataType.FLOAT, 5, 1, 2, 1, 3, 3), null, new int[] {1, 1},
                new int[] {100_000, 100_000});
        conv.addAdapter("default", LoraConfig.builder().rank(1).build());
        conv.setActiveAdapter("default");
        long[] kernel = bits(conv.weight());
        INDArray x = gaussian(DataType.FLOAT, 6, 1, 1, 1, 4, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> conv.forward(x));
        assertTrue(e.getMessage().contains("[1, 1, 4, 4] with padding [100000, 100000]")
                && e.getMessage().contains("200002x200002") && e.getMessage().contains("[40000800004, 9]")
                && e.getMessage().contains("BLAS's dimension limit"), e.getMessage());
        // an int padding large enough to overflow the element count in a long
        LoraConv2d overflow = LoraConv2d.base(gaussian(DataType.FLOAT, 7, 1, 2, 1, 3, 3), null, new int[] {1, 1},
                new int[] {Integer.MAX_VALUE, Integer.MAX_VALUE});
        assertThrows(IllegalArgumentException.class, () -> overflow.forward(x));
        // BLAS-sized dimensions whose bytes no machine has: 2.6e8 rows of 36,864 columns, 75 TB of FLOAT
        LoraConv2d wide = LoraConv2d.base(gaussian(DataType.FLOAT, 8, 1, 1, 4096, 3, 3), null, new int[] {1, 1},
                new int[] {8_000, 8_000});
        IllegalArgumentException mem = assertThrows(IllegalArgumentException.class,
                () -> wide.forward(gaussian(DataType.FLOAT, 9, 1, 1, 4096, 1, 1)));
        assertTrue(mem.getMessage().contains("bytes of memory") && mem.getMessage().contains("[255968001, 36864]"),
                mem.getMessage());
        assertArrayEquals(kernel, bits(conv.weight()), "the kernel is untouched");
        // a padding as large as the kernel still computes
        LoraConv2d ok = LoraConv2d.base(gaussian(DataType.FLOAT, 10, 1, 2, 1, 3, 3), null, new int[] {1, 1},
                new int[] {3, 3});
        assertArrayEquals(new long[] {1, 2, 8, 8}, ok.forward(x).shape());
    }
}
