package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * {@link LoraLinear#setAdapterScale}: PEFT's {@code set_scale}, {@code s' = scale·alpha / r} (rsLoRA:
 * {@code / sqrt(r)}), as laws against a layer whose config carries {@code alpha·scale}, and through merge, mixed
 * batches, files, gradients and the trainer.
 */
class AdapterScaleTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    @Provide
    Arbitrary<WeightLayout> layouts() {
        return Arbitraries.of(WeightLayout.values());
    }

    /** A layer over a fresh random W whose default adapter has random A and B drawn from {@code seed}. */
    private static LoraLinear layer(DataType type, WeightLayout layout, int in, int out, LoraConfig cfg, long seed) {
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed, 0.5, out, in) : gaussian(type, seed, 0.5, in, out);
        LoraLinear l = LoraLinear.wrap(w, gaussian(type, seed + 1, 0.5, out), cfg, layout);
        l.setAdapterWeights("default", gaussian(type, seed + 2, 0.5, cfg.rank(), in),
                gaussian(type, seed + 3, 0.5, out, cfg.rank()));
        return l;
    }

    /** The same layer (a copy of W and bias, the same A and B) with adapter config {@code cfg}. */
    private static LoraLinear twin(LoraLinear l, LoraConfig cfg) {
        LoraLinear t = LoraLinear.wrap(l.weight().dup(), l.bias().reshape(-1).dup(), cfg, l.layout());
        t.setAdapterWeights("default", l.loraA("default"), l.loraB("default"));
        return t;
    }

    @Property(tries = 60)
    void scaleThenUnscaleRestoresOutputsBitwise(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                                @ForAll @IntRange(min = 1, max = 24) int in,
                                                @ForAll @IntRange(min = 1, max = 24) int out,
                                                @ForAll boolean rsLora, @ForAll @DoubleRange(min = -8, max = 8) double c1,
                                                @ForAll @DoubleRange(min = -8, max = 8) double c2, @ForAll long seed) {
        int r = Math.max(1, Math.min(in, out) / 2);
        LoraLinear l = layer(type, layout, in, out, LoraConfig.builder().rank(r).alpha(3).rsLora(rsLora).build(), seed);
        INDArray x = gaussian(type, seed + 9, 1, 4, in);
        INDArray before = l.forward(x);
        double s0 = l.adapter("default").scaling();
        l.setAdapterScale("default", c1);
        l.setAdapterScale("default", c2);
        l.setAdapterScale("default", 1.0);
        assertEquals(Double.doubleToRawLongBits(s0), Double.doubleToRawLongBits(l.adapter("default").scaling()));
        assertBitwiseEquals(before, l.forward(x), "forward after scale " + c1 + ", " + c2 + ", then 1");
    }

    @Property(tries = 60)
    void forwardAtScaleEqualsAConfigWithAlphaTimesScale(@ForAll("types") DataType type,
                                                        @ForAll("layouts") WeightLayout layout,
                                                        @ForAll @IntRange(min = 1, max = 24) int in,
                                                        @ForAll @IntRange(min = 1, max = 24) int out,
                                                        @ForAll boolean rsLora, @ForAll @IntRange(min = 1, max = 8) int r0,
                                                        @ForAll @DoubleRange(min = 0.01, max = 20) double c,
                                                        @ForAll long seed) {
        int r = Math.min(r0, Math.min(in, out));
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(5).rsLora(rsLora).build();
        LoraLinear l = layer(type, layout, in, out, cfg, seed);
        LoraLinear expected = twin(l, cfg.toBuilder().alpha(5 * c).build());
        l.setAdapterScale("default", c);
        assertEquals(c, l.adapter("default").scale());
        assertEquals(5 * c, l.adapter("default").effectiveAlpha());
        assertEquals(cfg, l.adapter("default").config(), "the config itself does not change");
        INDArray x = gaussian(type, seed + 9, 1, 3, in);
        assertBitwiseEquals(expected.forward(x), l.forward(x), "scale " + c + " vs alpha·" + c);

        // training: the same forward and the same gradients, bit for bit
        l.train();
        expected.train();
        INDArray g = gaussian(type, seed + 10, 1, 3, out);
        assertBitwiseEquals(expected.forward(x), l.forward(x), "training forward");
        assertBitwiseEquals(expected.backward(g), l.backward(g), "dL/dx");
        assertBitwiseEquals(expected.adapter("default").gradA(), l.adapter("default").gradA(), "dL/dA");
        assertBitwiseEquals(expected.adapter("default").gradB(), l.adapter("default").gradB(), "dL/dB");
    }

    @Property(tries = 40)
    void mergeAtScaleEqualsMergeWithAlphaTimesScaleAndUnmergeIsExact(@ForAll("types") DataType type,
                                                                     @ForAll("layouts") WeightLayout layout,
                                                                     @ForAll @IntRange(min = 1, max = 32) int in,
                                                                     @ForAll @IntRange(min = 1, max = 32) int out,
                                                                     @ForAll boolean rsLora,
                                                                     @ForAll @DoubleRange(min = 0.01, max = 20) double c,
                                                                     @ForAll long seed) {
        int r = Math.max(1, Math.min(in, out) / 3);
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(2).rsLora(rsLora).build();
        LoraLinear l = layer(type, layout, in, out, cfg, seed);
        LoraLinear expected = twin(l, cfg.toBuilder().alpha(2 * c).build());
        long[] w0 = bits(l.weight());
        l.setAdapterScale("default", c);
        l.merge();
        expected.merge();
        assertBitwiseEquals(expected.weight(), l.weight(), "W merged at scale " + c);
        assertBitwiseEquals(expected.mergedWeight(), l.mergedWeight(), "mergedWeight while merged");
        l.unmerge();
        assertArrayEquals(w0, bits(l.weight()), "unmerge restores W bitwise");
    }

    @Property(tries = 30)
    void theScaleOfAMergedAdapterIsRefusedAndNothingChanges(@ForAll("types") DataType type,
                                                            @ForAll @DoubleRange(min = -4, max = 4) double c,
                                                            @ForAll long seed) {
        LoraLinear l = layer(type, WeightLayout.OUT_IN, 6, 5, LoraConfig.builder().rank(2).alpha(4).build(), seed);
        l.addAdapter("other", LoraConfig.builder().rank(1).build());
        l.setAdapterScale("default", 0.5);
        INDArray x = gaussian(type, seed + 9, 1, 2, 6);
        l.merge();
        long[] merged = bits(l.weight());
        INDArray y = l.forward(x);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> l.setAdapterScale("default", c));
        assertTrue(e.getMessage().contains("'default'") && e.getMessage().contains("merged")
                && e.getMessage().contains("unmerge"), e.getMessage());
        assertEquals(0.5, l.adapter("default").scale(), "scale unchanged");
        assertArrayEquals(merged, bits(l.weight()), "W unchanged");
        assertBitwiseEquals(y, l.forward(x), "output unchanged");
        assertTrue(l.isMerged());
        // another adapter, not merged, may change
        l.setAdapterScale("other", c);
        assertEquals(c, l.adapter("other").scale());
        l.unmerge();
        l.setAdapterScale("default", c);
        assertEquals(c, l.adapter("default").scale());
    }

    @Test
    void aScaleThatIsNotFiniteInTheLayersTypeIsRefused() {
        LoraLinear l = layer(DataType.FLOAT, WeightLayout.OUT_IN, 4, 4, LoraConfig.builder().rank(2).alpha(4).build(), 3);
        long[] s0 = {Double.doubleToRawLongBits(l.adapter("default").scaling())};
        for (double bad : new double[] {Double.NaN, Double.POSITIVE_INFINITY, 1e300}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.setAdapterScale("default", bad));
            assertTrue(e.getMessage().contains("scale of adapter 'default'") && e.getMessage().contains(String.valueOf(bad)),
                    e.getMessage());
            assertEquals(s0[0], Double.doubleToRawLongBits(l.adapter("default").scaling()));
        }
        assertThrows(IllegalArgumentException.class, () -> l.setAdapterScale("missing", 2));
    }

    @Property(tries = 30)
    void mixedBatchesUseEachAdaptersScale(@ForAll @IntRange(min = 1, max = 12) int n,
                                          @ForAll @DoubleRange(min = -5, max = 5) double ca,
                                          @ForAll @DoubleRange(min = -5, max = 5) double cb, @ForAll long seed) {
        int in = 7;
        int out = 5;
        LoraLinear l = layer(DataType.DOUBLE, WeightLayout.OUT_IN, in, out, LoraConfig.builder().rank(2).alpha(4).build(), seed);
        l.addAdapter("b", LoraConfig.builder().rank(3).alpha(2).rsLora(true).build());
        l.setAdapterWeights("b", gaussian(DataType.DOUBLE, seed + 5, 0.5, 3, in), gaussian(DataType.DOUBLE, seed + 6, 0.5, out, 3));
        l.setAdapterScale("default", ca);
        l.setAdapterScale("b", cb);
        INDArray x = gaussian(DataType.DOUBLE, seed + 9, 1, n, in);
        String[] names = new String[n];
        String[] choice = {"default", "b", LoraLinear.BASE_MODEL};
        for (int i = 0; i < n; i++) {
            names[i] = choice[(int) Math.floorMod(seed + i, 3L)];
        }
        INDArray mixed = l.forward(x, names);
        for (int i = 0; i < n; i++) {
            INDArray row = x.getRow(i, true);
            INDArray expected;
            if (names[i].equals(LoraLinear.BASE_MODEL)) {
                l.disableAdapters();
                expected = l.forward(row);
                l.enableAdapters();
            } else {
                l.setActiveAdapter(names[i]);
                expected = l.forward(row);
            }
            assertTrue(TestData.maxAbsDiff(mixed.getRow(i, true), expected) < 1e-12,
                    "row " + i + " (" + names[i] + ") differs from its single-adapter forward");
        }
    }

    @Property(tries = 15)
    void savedFilesHoldTheEffectiveAlphaAndReloadReproducesOutputs(@ForAll boolean rsLora,
                                                                   @ForAll @DoubleRange(min = 0.05, max = 10) double c,
                                                                   @ForAll long seed) throws IOException {
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(6).rsLora(rsLora).build();
        LoraLinear l = layer(DataType.DOUBLE, WeightLayout.OUT_IN, 9, 7, cfg, seed);
        l.setAdapterScale("default", c);
        Path dir = Files.createTempDirectory("lora4j-scale");
        PeftAdapterFiles.save(dir, Map.of("model.fc", l), "default", DataType.DOUBLE);
        PeftAdapterConfig file = PeftAdapterFiles.read(dir).config();
        assertEquals(c * 6, file.loraAlpha(), "lora_alpha = scale·alpha");
        assertEquals(rsLora, file.useRslora());

        LoraLinear fresh = LoraLinear.base(l.weight().dup(), l.bias().reshape(-1).dup(), WeightLayout.OUT_IN);
        PeftAdapterFiles.load(dir, Map.of("model.fc", fresh), "loaded");
        fresh.setActiveAdapter("loaded");
        assertEquals(1.0, fresh.adapter("loaded").scale(), "the file's alpha already holds the scale");
        INDArray x = gaussian(DataType.DOUBLE, seed + 9, 1, 4, 9);
        assertBitwiseEquals(l.forward(x), fresh.forward(x), "reloaded adapter at scale " + c);
    }

    @Test
    void aNonPositiveScaleCannotBeSavedAsPeftAlpha() throws IOException {
        LoraLinear l = layer(DataType.DOUBLE, WeightLayout.OUT_IN, 4, 4, LoraConfig.builder().rank(2).build(), 8);
        l.setAdapterScale("default", -1);
        Path dir = Files.createTempDirectory("lora4j-scale");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.save(dir, Map.of("fc", l), "default"));
        assertTrue(e.getMessage().contains("positive"), e.getMessage());
        assertFalse(Files.exists(dir.resolve(PeftAdapterFiles.MODEL_FILE)), "nothing written");
    }

    /** {@code L = Σ G ⊙ forward(x)} in double, for finite differences. */
    private static double loss(LoraLinear l, INDArray x, INDArray g) {
        return l.forward(x).mul(g).sumNumber().doubleValue();
    }

    @Property(tries = 10)
    void gradientsAndTheTrainersStepScaleWithTheAdapterScale(@ForAll @DoubleRange(min = -6, max = 6) double c,
                                                             @ForAll boolean rsLora, @ForAll long seed) {
        int in = 5;
        int out = 4;
        int r = 2;
        double lr = 0.1;
        LoraLinear l = layer(DataType.DOUBLE, WeightLayout.OUT_IN, in, out,
                LoraConfig.builder().rank(r).alpha(3).rsLora(rsLora).build(), seed);
        l.setAdapterScale("default", c);
        INDArray x = gaussian(DataType.DOUBLE, seed + 9, 1, 3, in);
        INDArray g = gaussian(DataType.DOUBLE, seed + 10, 1, 3, out);
        INDArray a0 = l.loraA("default").dup();
        INDArray b0 = l.loraB("default").dup();
        // central differences of L in A and B, at scale c
        INDArray fdA = a0.like();
        INDArray fdB = b0.like();
        double h = 1e-5;
        for (int which = 0; which < 2; which++) {
            INDArray p0 = which == 0 ? a0 : b0;
            INDArray fd = which == 0 ? fdA : fdB;
            for (int i = 0; i < p0.length(); i++) {
                INDArray plus = p0.dup();
                plus.putScalar(i, p0.getDouble(i) + h);
                INDArray minus = p0.dup();
                minus.putScalar(i, p0.getDouble(i) - h);
                l.setAdapterWeights("default", which == 0 ? plus : a0, which == 0 ? b0 : plus);
                double lp = loss(l, x, g);
                l.setAdapterWeights("default", which == 0 ? minus : a0, which == 0 ? b0 : minus);
                double lm = loss(l, x, g);
                fd.putScalar(i, (lp - lm) / (2 * h));
            }
        }
        l.setAdapterWeights("default", a0, b0);
        LoraTrainer trainer = LoraTrainer.builder().updater(new Sgd(lr)).build(l);
        l.train();
        l.forward(x);
        l.backward(g);
        double tol = 1e-7 * (1 + Math.abs(c));
        assertTrue(TestData.maxAbsDiff(l.adapter("default").gradA(), fdA) < tol, "dL/dA vs finite differences at scale " + c);
        assertTrue(TestData.maxAbsDiff(l.adapter("default").gradB(), fdB) < tol, "dL/dB vs finite differences at scale " + c);
        trainer.step();
        // SGD: the step is lr times the gradient the finite differences give at this scale
        assertTrue(TestData.maxAbsDiff(l.loraA("default"), a0.sub(fdA.mul(lr))) < lr * tol, "A after one step");
        assertTrue(TestData.maxAbsDiff(l.loraB("default"), b0.sub(fdB.mul(lr))) < lr * tol, "B after one step");
    }
}
