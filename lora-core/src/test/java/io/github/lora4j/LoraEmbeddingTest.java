package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
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
import org.nd4j.linalg.factory.Nd4j;

/** {@link LoraEmbedding}: PEFT's init, the lookup formula, gradients against finite differences, exact merge. */
class LoraEmbeddingTest {

    private static LoraEmbedding trained(DataType type, long seed, int vocab, int dim, int r, double alpha) {
        LoraEmbedding e = LoraEmbedding.wrap(gaussian(type, seed, 1, vocab, dim),
                LoraConfig.builder().rank(r).alpha(alpha).build());
        e.setAdapterWeights("default", gaussian(type, seed + 1, 0.5, r, vocab), gaussian(type, seed + 2, 0.5, dim, r));
        return e;
    }

    /** y[i, j] = T[id_i, j] + s Σ_k A[k, id_i] B[j, k], in double from the arrays' values. */
    private static double[][] formula(LoraEmbedding e, long[] ids) {
        LoraAdapter ad = e.adapter(e.activeAdapter());
        double[][] t = e.table().castTo(DataType.DOUBLE).toDoubleMatrix();
        double[][] a = ad.a().castTo(DataType.DOUBLE).toDoubleMatrix();
        double[][] b = ad.b().castTo(DataType.DOUBLE).toDoubleMatrix();
        double[][] y = new double[ids.length][(int) e.embeddingDim()];
        for (int i = 0; i < ids.length; i++) {
            for (int j = 0; j < y[i].length; j++) {
                double v = t[(int) ids[i]][j];
                for (int k = 0; k < a.length; k++) {
                    v += ad.scaling() * a[k][(int) ids[i]] * b[j][k];
                }
                y[i][j] = v;
            }
        }
        return y;
    }

    @Test
    void aFreshAdapterFollowsPeftsEmbeddingInitAndChangesNothing() {
        INDArray table = gaussian(DataType.FLOAT, 1, 1, 50, 6);
        LoraEmbedding e = LoraEmbedding.wrap(table, LoraConfig.builder().rank(4).seed(7).build());
        LoraAdapter ad = e.adapter("default");
        assertArrayEquals(new long[] {4, 50}, ad.a().shape(), "A [r, num_embeddings] as lora_embedding_A");
        assertArrayEquals(new long[] {6, 4}, ad.b().shape(), "B [dim, r] as lora_embedding_B");
        assertEquals(0.0, ad.a().amaxNumber().doubleValue(), "A = 0");
        assertTrue(ad.b().amaxNumber().doubleValue() > 0, "B ~ N(0, 1), not zero");
        long[] ids = {3, 49, 0, 3};
        INDArray y = e.forward(ids);
        for (int i = 0; i < ids.length; i++) {
            assertBitwiseEquals(table.getRow(ids[i]).reshape(1, 6), y.getRow(i).reshape(1, 6), "row " + i);
        }
        LoraEmbedding again = LoraEmbedding.wrap(table, LoraConfig.builder().rank(4).seed(7).build());
        assertBitwiseEquals(ad.b(), again.adapter("default").b(), "B is deterministic from the seed");
        LoraEmbedding zero = LoraEmbedding.wrap(table, LoraConfig.builder().rank(4).init(LoraInit.ZERO).build());
        assertEquals(0.0, zero.adapter("default").b().amaxNumber().doubleValue(), "ZERO init: B = 0 too");
    }

    @Property(tries = 30)
    void forwardIsTheLookupPlusTheScaledLowRankRow(@ForAll @IntRange(min = 1, max = 20) int vocab,
                                                  @ForAll @IntRange(min = 1, max = 9) int dim,
                                                  @ForAll @IntRange(min = 0, max = 12) int n, @ForAll long seed) {
        int r = 1 + Math.floorMod(seed, Math.min(vocab, dim));
        LoraEmbedding e = trained(DataType.DOUBLE, seed, vocab, dim, r, 1 + Math.floorMod(seed, 7));
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = Math.floorMod(seed * 31 + i * 17L, vocab);
        }
        INDArray y = e.forward(ids);
        assertArrayEquals(new long[] {n, dim}, y.shape());
        double[][] expected = formula(e, ids);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < dim; j++) {
                assertEquals(expected[i][j], y.getDouble(i, j), 1e-12 * (1 + Math.abs(expected[i][j])));
            }
        }
    }

    @Test
    void idsOfAnyShapeGiveThatShapePlusDim() {
        LoraEmbedding e = trained(DataType.FLOAT, 3, 10, 4, 2, 4);
        INDArray ids = Nd4j.createFromArray(new int[][] {{1, 2, 3}, {9, 0, 1}});
        INDArray y = e.forward(ids);
        assertArrayEquals(new long[] {2, 3, 4}, y.shape());
        assertBitwiseEquals(e.forward(9L).reshape(4), y.get(org.nd4j.linalg.indexing.NDArrayIndex.point(1),
                org.nd4j.linalg.indexing.NDArrayIndex.point(0), org.nd4j.linalg.indexing.NDArrayIndex.all()).dup(),
                "row (1, 0) is id 9");
    }

    @Test
    void gradientsOfAAndBMatchFiniteDifferencesInDouble() {
        LoraEmbedding e = trained(DataType.DOUBLE, 11, 7, 5, 3, 6);
        long[] ids = {2, 6, 2, 0}; // a repeated id accumulates
        INDArray g = gaussian(DataType.DOUBLE, 12, 1, 4, 5);
        e.train();
        e.forward(ids);
        e.backward(g);
        LoraAdapter ad = e.adapter("default");
        // L = Σ y ∘ g; central differences on every element of A and B.
        for (INDArray p : new INDArray[] {ad.a(), ad.b()}) {
            INDArray analytic = p == ad.a() ? ad.gradA() : ad.gradB();
            for (int i = 0; i < p.length(); i++) {
                double old = p.getDouble(i);
                double h = 1e-6;
                p.putScalar(i, old + h);
                double up = e.forward(ids).mul(g).sumNumber().doubleValue();
                p.putScalar(i, old - h);
                double down = e.forward(ids).mul(g).sumNumber().doubleValue();
                p.putScalar(i, old);
                double numeric = (up - down) / (2 * h);
                assertEquals(numeric, analytic.getDouble(i), 1e-6 * (1 + Math.abs(numeric)),
                        (p == ad.a() ? "dA" : "dB") + " element " + i);
            }
        }
    }

    @Test
    void aBackwardNeedsAFreshTrainingForward() {
        LoraEmbedding e = trained(DataType.FLOAT, 1, 6, 4, 2, 2);
        INDArray g = Nd4j.ones(DataType.FLOAT, 2, 4);
        assertThrows(IllegalStateException.class, () -> e.backward(g), "no forward yet");
        e.train();
        e.forward(1, 2);
        assertThrows(IllegalArgumentException.class, () -> e.backward(Nd4j.ones(DataType.FLOAT, 3, 4)));
        e.merge();
        e.unmerge();
        assertThrows(IllegalStateException.class, () -> e.backward(g), "a merge in between drops the forward");
        assertThrows(IllegalArgumentException.class, () -> e.forward(6L));
        assertThrows(IllegalArgumentException.class, () -> e.forward(-1L));
        assertThrows(IllegalArgumentException.class, () -> e.forward(Nd4j.createFromArray(0.5f)));
    }

    /** Issue 29 item 18: BOOL ids were looked up as ids 0 and 1, UTF8 ids failed inside ND4J. */
    @Test
    void idsOfANonNumericTypeAreRefusedNamingTheType() {
        LoraEmbedding e = trained(DataType.FLOAT, 3, 6, 4, 2, 2);
        e.train();
        e.forward(1, 2);
        INDArray g = Nd4j.ones(DataType.FLOAT, 2, 4);
        IllegalArgumentException bool = assertThrows(IllegalArgumentException.class,
                () -> e.forward(Nd4j.createFromArray(true, false, true)));
        assertTrue(bool.getMessage().contains("expected an integer array") && bool.getMessage().contains("BOOL [3]"),
                bool.getMessage());
        IllegalArgumentException utf8 = assertThrows(IllegalArgumentException.class,
                () -> e.forward(Nd4j.create("1", "2")));
        assertTrue(utf8.getMessage().contains("got UTF8 [2]"), utf8.getMessage());
        e.backward(g);      // the refused lookups left the pending training forward alone
        assertArrayEquals(new long[] {2, 4}, e.forward(Nd4j.createFromArray((byte) 1, (byte) 5)).shape(), "INT8 ids work");
    }

    @Property(tries = 40)
    void mergeThenUnmergeRestoresTheTableBitwiseAndTheMergedLookupMatches(@ForAll long seed,
                                                                        @ForAll @IntRange(min = 2, max = 30) int vocab) {
        LoraEmbedding e = trained(DataType.FLOAT, seed, vocab, 6, 2, 16);
        long[] before = bits(e.table());
        long[] ids = {0, vocab - 1, vocab / 2};
        INDArray unmerged = e.forward(ids);
        e.merge();
        assertTrue(e.isMerged());
        INDArray merged = e.forward(ids);
        assertTrue(merged.sub(unmerged).amaxNumber().doubleValue() <= 1e-5 * (1 + unmerged.amaxNumber().doubleValue()));
        assertThrows(IllegalStateException.class, () -> e.setAdapterWeights("default", e.adapter("default").a(),
                e.adapter("default").b()));
        e.unmerge();
        assertArrayEquals(before, bits(e.table()), "unmerge restores every bit of the table");
        assertBitwiseEquals(unmerged, e.forward(ids), "the unmerged lookup again");
    }

    @Test
    void mergedTableIsTheTablePlusTheTransposedUpdateAndChangesNothing() {
        LoraEmbedding e = trained(DataType.DOUBLE, 5, 8, 3, 2, 4);
        long[] before = bits(e.table());
        INDArray m = e.mergedTable();
        long[] all = {0, 1, 2, 3, 4, 5, 6, 7};
        double[][] expected = formula(e, all);
        for (int i = 0; i < 8; i++) {
            for (int j = 0; j < 3; j++) {
                assertEquals(expected[i][j], m.getDouble(i, j), 1e-12);
            }
        }
        assertArrayEquals(before, bits(e.table()));
    }
}
