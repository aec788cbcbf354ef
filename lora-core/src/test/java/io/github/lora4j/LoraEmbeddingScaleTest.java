package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Scale;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@link LoraEmbedding#setAdapterScale}: the run-time scale is exactly a change of alpha, undoes bitwise, and is
 * refused while its adapter is merged (leaving scale, table and outputs as they were).
 */
class LoraEmbeddingScaleTest {

    /** One random case: the table, the adapter's A and B, the config, and ids that touch the first and last row. */
    private record Case(DataType type, INDArray table, INDArray a, INDArray b, LoraConfig config, long[] ids) {

        static Case of(long seed, int vocab, int dim, double alpha) {
            DataType type = Math.floorMod(seed, 2) == 0 ? DataType.FLOAT : DataType.DOUBLE;
            int r = 1 + Math.floorMod(seed, Math.min(vocab, dim));
            LoraConfig cfg = LoraConfig.builder().rank(r).alpha(alpha).rsLora(Math.floorMod(seed, 3) == 0).build();
            long[] ids = {0, vocab - 1, Math.floorMod(seed, vocab), 0};
            return new Case(type, gaussian(type, seed, 1, vocab, dim), gaussian(type, seed + 1, 0.5, r, vocab),
                    gaussian(type, seed + 2, 0.5, dim, r), cfg, ids);
        }

        /** A layer over its own copy of the table, with adapter "default" (active) made with {@code config}. */
        LoraEmbedding layer(LoraConfig config) {
            LoraEmbedding e = LoraEmbedding.wrap(table.dup(), config);
            e.setAdapterWeights("default", a, b);
            return e;
        }
    }

    @Property(tries = 30)
    void scalingThenResettingToOneRestoresOutputsAndGradientsBitwise(
            @ForAll long seed,
            @ForAll @IntRange(min = 1, max = 12) int vocab,
            @ForAll @IntRange(min = 1, max = 7) int dim,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double scale,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double again) {
        Case c = Case.of(seed, vocab, dim, 3);
        LoraEmbedding e = c.layer(c.config());
        INDArray y = e.forward(c.ids());
        double s = e.adapter("default").scaling();

        e.setAdapterScale("default", scale);
        assertEquals(scale, e.adapter("default").scale(), "scale()");
        e.forward(c.ids());
        e.setAdapterScale("default", again);
        e.setAdapterScale("default", 1.0);

        assertEquals(Double.doubleToRawLongBits(s), Double.doubleToRawLongBits(e.adapter("default").scaling()),
                "scaling after the reset: expected " + s + ", got " + e.adapter("default").scaling());
        assertEquals(Double.doubleToRawLongBits(c.config().scaling()), Double.doubleToRawLongBits(s));
        assertBitwiseEquals(y, e.forward(c.ids()), "output after scale " + scale + ", " + again + ", 1");
        assertBitwiseEquals(gradients(c.layer(c.config()), c), gradients(e, c), "dA after the reset");
    }

    @Property(tries = 30)
    void aScaleIsBitwiseAnAdapterWhoseAlphaIsAlphaTimesTheScale(
            @ForAll long seed,
            @ForAll @IntRange(min = 1, max = 12) int vocab,
            @ForAll @IntRange(min = 1, max = 7) int dim,
            @ForAll @Scale(6) @DoubleRange(min = 0.25, max = 64) double alpha,
            @ForAll @Scale(6) @DoubleRange(min = 1e-3, max = 1e3) double scale) {
        Case c = Case.of(seed, vocab, dim, alpha);
        LoraEmbedding scaled = c.layer(c.config());
        scaled.setAdapterScale("default", scale);
        LoraEmbedding reference = c.layer(c.config().toBuilder().alpha(alpha * scale).build());

        assertEquals(Double.doubleToRawLongBits(reference.adapter("default").scaling()),
                Double.doubleToRawLongBits(scaled.adapter("default").scaling()), "scaling");
        assertEquals(alpha * scale, scaled.adapter("default").effectiveAlpha(), 0.0, "effectiveAlpha");
        assertEquals(alpha, scaled.adapter("default").config().alpha(), 0.0, "the config keeps its alpha");
        assertBitwiseEquals(reference.forward(c.ids()), scaled.forward(c.ids()), "forward");
        INDArray ids2d = Nd4j.createFromArray(c.ids()).reshape(2, 2);
        assertBitwiseEquals(reference.forward(ids2d), scaled.forward(ids2d), "forward of [2, 2] ids");
        assertBitwiseEquals(gradients(reference, c), gradients(scaled, c), "dA");
        assertBitwiseEquals(reference.adapter("default").gradB(), scaled.adapter("default").gradB(), "dB");
    }

    @Property(tries = 30)
    void mergingAScaledAdapterIsBitwiseMergingTheScaledAlpha(
            @ForAll long seed,
            @ForAll @IntRange(min = 1, max = 12) int vocab,
            @ForAll @IntRange(min = 1, max = 7) int dim,
            @ForAll @Scale(6) @DoubleRange(min = 0.25, max = 64) double alpha,
            @ForAll @Scale(6) @DoubleRange(min = 1e-3, max = 1e3) double scale,
            @ForAll MergeMode mode) {
        Case c = Case.of(seed, vocab, dim, alpha);
        LoraEmbedding scaled = c.layer(c.config());
        scaled.setAdapterScale("default", scale);
        LoraEmbedding reference = c.layer(c.config().toBuilder().alpha(alpha * scale).build());
        assertBitwiseEquals(reference.mergedTable(), scaled.mergedTable(), "mergedTable()");

        scaled.merge(mode);
        reference.merge(mode);

        assertBitwiseEquals(reference.table(), scaled.table(), "the table merged in " + mode);
        assertBitwiseEquals(reference.forward(c.ids()), scaled.forward(c.ids()), "merged forward");
        scaled.unmerge();
        if (mode == MergeMode.EXACT) {
            assertBitwiseEquals(c.table(), scaled.table(), "the table after an exact unmerge of the scaled adapter");
        }
    }

    @Property(tries = 30)
    void aMergedAdaptersScaleIsRefusedAndNothingChanges(
            @ForAll long seed,
            @ForAll @IntRange(min = 1, max = 12) int vocab,
            @ForAll @IntRange(min = 1, max = 7) int dim,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double before,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double refused) {
        Case c = Case.of(seed, vocab, dim, 2);
        LoraEmbedding e = c.layer(c.config());
        e.addAdapter("other", c.config());
        e.setAdapterScale("default", before);
        INDArray y = e.forward(c.ids());
        e.merge();
        INDArray mergedTable = e.table().dup();
        INDArray mergedY = e.forward(c.ids());

        IllegalStateException ex = assertThrows(IllegalStateException.class,
                () -> e.setAdapterScale("default", refused));
        assertTrue(ex.getMessage().contains("'default'") && ex.getMessage().contains("unmerge()"),
                "the refusal names the adapter and the remedy: " + ex.getMessage());
        assertEquals(before, e.adapter("default").scale(), 0.0, "the scale is unchanged");
        assertTrue(e.isMerged());
        assertBitwiseEquals(mergedTable, e.table(), "the merged table");
        assertBitwiseEquals(mergedY, e.forward(c.ids()), "the merged output");

        e.setAdapterScale("other", refused);                        // an unmerged adapter may still be scaled
        assertEquals(refused, e.adapter("other").scale(), 0.0);
        e.unmerge();
        assertBitwiseEquals(c.table(), e.table(), "unmerge with the scale the merge used restores the table");
        assertBitwiseEquals(y, e.forward(c.ids()), "the output after unmerge");
        assertFalse(e.isMerged());
    }

    /** dA of one training forward and backward with an all-ones upstream gradient (zeroed first). */
    private static INDArray gradients(LoraEmbedding e, Case c) {
        e.zeroGrad();
        e.train();
        INDArray y = e.forward(c.ids());
        e.backward(Nd4j.ones(c.type(), y.shape()));
        e.eval();
        return e.adapter("default").gradA().dup();
    }
}
