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

/**
 * {@link LoraConv2d#setAdapterScale}: the run-time scale is exactly a change of alpha, undoes bitwise, and is refused
 * while its adapter is merged (leaving scale, kernel and outputs as they were).
 */
class LoraConv2dScaleTest {

    /** One random case: kernel, bias, stride, padding, the adapter's A and B, its config and an input. */
    private record Case(INDArray weight, INDArray bias, int stride, int padding, INDArray a, INDArray b,
                        LoraConfig config, INDArray x) {

        static Case of(long seed, int c, int o, int k, double alpha) {
            DataType type = Math.floorMod(seed, 2) == 0 ? DataType.FLOAT : DataType.DOUBLE;
            int r = 1 + Math.floorMod(seed, Math.min(o, c * k * k));
            int stride = 1 + Math.floorMod(seed >> 1, 2);
            int padding = Math.floorMod(seed >> 2, 2);
            LoraConfig cfg = LoraConfig.builder().rank(r).alpha(alpha).rsLora(Math.floorMod(seed, 3) == 0).build();
            return new Case(gaussian(type, seed, 1, o, c, k, k),
                    Math.floorMod(seed >> 3, 2) == 0 ? null : gaussian(type, seed + 1, 1, o), stride, padding,
                    gaussian(type, seed + 2, 0.5, r, c, k, k), gaussian(type, seed + 3, 0.5, o, r, 1, 1), cfg,
                    gaussian(type, seed + 4, 1, 2, c, k + 2, k + 1));
        }

        /** A layer over its own copy of the kernel, with adapter "default" (active) made with {@code config}. */
        LoraConv2d layer(LoraConfig config) {
            LoraConv2d conv = LoraConv2d.base(weight.dup('c'), bias, new int[] {stride, stride},
                    new int[] {padding, padding});
            conv.addAdapter("default", config);
            conv.setActiveAdapter("default");
            conv.setAdapterWeights("default", a, b);
            return conv;
        }
    }

    @Property(tries = 25)
    void scalingThenResettingToOneRestoresOutputsBitwise(
            @ForAll long seed, @ForAll @IntRange(min = 1, max = 3) int c, @ForAll @IntRange(min = 1, max = 4) int o,
            @ForAll @IntRange(min = 1, max = 3) int k,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double scale,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double again) {
        Case cs = Case.of(seed, c, o, k, 3);
        LoraConv2d conv = cs.layer(cs.config());
        INDArray y = conv.forward(cs.x());
        double s = conv.scaling("default");

        conv.setAdapterScale("default", scale);
        assertEquals(scale, conv.adapter("default").scale(), 0.0, "scale()");
        conv.forward(cs.x());
        conv.setAdapterScale("default", again);
        conv.setAdapterScale("default", 1.0);

        assertEquals(Double.doubleToRawLongBits(cs.config().scaling()), Double.doubleToRawLongBits(s));
        assertEquals(Double.doubleToRawLongBits(s), Double.doubleToRawLongBits(conv.scaling("default")),
                "scaling after the reset: expected " + s + ", got " + conv.scaling("default"));
        assertBitwiseEquals(y, conv.forward(cs.x()), "output after scale " + scale + ", " + again + ", 1");
        assertBitwiseEquals(cs.layer(cs.config()).mergedWeight(), conv.mergedWeight(), "mergedWeight after the reset");
    }

    @Property(tries = 25)
    void aScaleIsBitwiseAnAdapterWhoseAlphaIsAlphaTimesTheScale(
            @ForAll long seed, @ForAll @IntRange(min = 1, max = 3) int c, @ForAll @IntRange(min = 1, max = 4) int o,
            @ForAll @IntRange(min = 1, max = 3) int k,
            @ForAll @Scale(6) @DoubleRange(min = 0.25, max = 64) double alpha,
            @ForAll @Scale(6) @DoubleRange(min = 1e-3, max = 1e3) double scale) {
        Case cs = Case.of(seed, c, o, k, alpha);
        LoraConv2d scaled = cs.layer(cs.config());
        scaled.setAdapterScale("default", scale);
        LoraConv2d reference = cs.layer(cs.config().toBuilder().alpha(alpha * scale).build());

        assertEquals(Double.doubleToRawLongBits(reference.scaling("default")),
                Double.doubleToRawLongBits(scaled.scaling("default")), "scaling");
        assertEquals(alpha, scaled.adapterConfig("default").alpha(), 0.0, "the config keeps its alpha");
        assertEquals(alpha * scale, scaled.adapter("default").effectiveAlpha(), 0.0, "effectiveAlpha");
        assertBitwiseEquals(reference.forward(cs.x()), scaled.forward(cs.x()), "forward");
    }

    @Property(tries = 25)
    void mergingAScaledAdapterIsBitwiseMergingTheScaledAlpha(
            @ForAll long seed, @ForAll @IntRange(min = 1, max = 3) int c, @ForAll @IntRange(min = 1, max = 4) int o,
            @ForAll @IntRange(min = 1, max = 3) int k,
            @ForAll @Scale(6) @DoubleRange(min = 0.25, max = 64) double alpha,
            @ForAll @Scale(6) @DoubleRange(min = 1e-3, max = 1e3) double scale,
            @ForAll MergeMode mode) {
        Case cs = Case.of(seed, c, o, k, alpha);
        LoraConv2d scaled = cs.layer(cs.config());
        scaled.setAdapterScale("default", scale);
        LoraConv2d reference = cs.layer(cs.config().toBuilder().alpha(alpha * scale).build());
        assertBitwiseEquals(reference.mergedWeight(), scaled.mergedWeight(), "mergedWeight()");

        scaled.merge(mode);
        reference.merge(mode);

        assertBitwiseEquals(reference.weight(), scaled.weight(), "the kernel merged in " + mode);
        assertBitwiseEquals(reference.forward(cs.x()), scaled.forward(cs.x()), "merged forward");
        scaled.unmerge();
        if (mode == MergeMode.EXACT) {
            assertBitwiseEquals(cs.weight(), scaled.weight(), "the kernel after an exact unmerge");
        }
    }

    @Property(tries = 25)
    void aMergedAdaptersScaleIsRefusedAndNothingChanges(
            @ForAll long seed, @ForAll @IntRange(min = 1, max = 3) int c, @ForAll @IntRange(min = 1, max = 4) int o,
            @ForAll @IntRange(min = 1, max = 3) int k,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double before,
            @ForAll @Scale(6) @DoubleRange(min = -50, max = 50) double refused) {
        Case cs = Case.of(seed, c, o, k, 2);
        LoraConv2d conv = cs.layer(cs.config());
        conv.addAdapter("other", cs.config());
        conv.setAdapterScale("default", before);
        INDArray y = conv.forward(cs.x());
        conv.merge();
        INDArray mergedKernel = conv.weight().dup();
        INDArray mergedY = conv.forward(cs.x());

        IllegalStateException ex = assertThrows(IllegalStateException.class,
                () -> conv.setAdapterScale("default", refused));
        assertTrue(ex.getMessage().contains("'default'") && ex.getMessage().contains("unmerge()"),
                "the refusal names the adapter and the remedy: " + ex.getMessage());
        assertEquals(before, conv.adapter("default").scale(), 0.0, "the scale is unchanged");
        assertTrue(conv.isMerged());
        assertBitwiseEquals(mergedKernel, conv.weight(), "the merged kernel");
        assertBitwiseEquals(mergedY, conv.forward(cs.x()), "the merged output");

        conv.setAdapterScale("other", refused);                     // an unmerged adapter may still be scaled
        assertEquals(refused, conv.adapter("other").scale(), 0.0);
        conv.unmerge();
        assertBitwiseEquals(cs.weight(), conv.weight(), "unmerge with the scale the merge used restores the kernel");
        assertBitwiseEquals(y, conv.forward(cs.x()), "the output after unmerge");
        assertFalse(conv.isMerged());
    }
}
