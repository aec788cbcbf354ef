package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.Graphs.OUT;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.DropoutStream;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Issue 30 item 7 for SameDiff: PEFT's LoRA dropout {@code B(A(dropout(x)))}, in training only, with one mask per
 * training step shared by its forward and backward, the masks lora-core's {@link DropoutStream} draws for the
 * adapter's configuration (so repeatable from its seed), and taken from a loaded file.
 */
class LoraSameDiffDropoutTest {

    private static final DataType D = DataType.DOUBLE;
    private static final double P = 0.5;

    @TempDir
    Path tmp;

    private static LoraConfig config(double p) {
        return LoraConfig.builder().rank(2).alpha(3).dropout(p).init(LoraInit.GAUSSIAN).build();
    }

    /** The MMUL graph with LoRA on fc0 and fc1 and a random B (so that every gradient path is non-trivial). */
    private static LoraSameDiffModel adapted(double p) {
        SameDiff sd = Graphs.build(Kind.MMUL, D, 3);
        LoraSameDiffModel model = LoraSameDiff.apply(sd, config(p), "fc0", "fc1");
        int seed = 70;
        for (LoraSameDiff a : model.adapted().values()) {
            INDArray b = sd.getArrForVarName(a.loraB().name());
            b.assign(gaussian(D, seed++, 0.5, b.shape()));
        }
        return model;
    }

    private static Map<String, INDArray> feed(long seed, int n) {
        return Map.of("x", gaussian(D, seed, 1.0, n, IN), "label", gaussian(D, seed + 1, 1.0, n, OUT));
    }

    @Test
    void oneTrainingStepUsesOneMaskInItsForwardAndBackward() {
        LoraSameDiffModel model = adapted(P);
        SameDiff sd = model.sameDiff();
        LoraSameDiff fc1 = model.adapter("fc1/weight");
        Map<String, INDArray> feed = feed(5, 9);
        DropoutStream masks = DropoutStream.of(fc1.config());
        for (int step = 0; step < 3; step++) {
            OutAndGrad r = sd.calculateGradientsAndOutputs(feed, List.of("h", "fc1/lora_dropped", "fc1"),
                    List.of("fc1/lora_A", "fc1/lora_B"));
            INDArray h = r.getOutputs().get("h");
            INDArray dropped = r.getOutputs().get("fc1/lora_dropped");
            INDArray y = r.getOutputs().get("fc1");
            // dropped = h ⊙ m / (1 − p), m the next mask of the adapter's stream (one per step), some of each
            boolean[] kept = masks.next(h.length());
            int zeros = 0;
            for (int i = 0; i < kept.length; i++) {
                double expected = kept[i] ? h.getDouble(i) / (1 - P) : 0.0;
                assertEquals(expected, dropped.getDouble(i), 1e-15 * Math.abs(expected), "step " + step + ", element "
                        + i + ": the stream's mask");
                zeros += kept[i] ? 0 : 1;
            }
            assertTrue(zeros > 0 && zeros < h.length(), "step " + step + ": p = 0.5 drops some, keeps some: " + zeros);
            // MSE (mean over n·out): g = dL/dy = 2 (y − label) / (n·out); the gradients of A and B of the same mask
            INDArray g = y.sub(feed.get("label")).muli(2.0 / y.length());
            INDArray a = sd.getArrForVarName("fc1/lora_A");
            INDArray b = sd.getArrForVarName("fc1/lora_B");
            double s = fc1.config().scaling();
            INDArray dB = g.transpose().mmul(dropped.mmul(a.transpose())).muli(s);       // s gᵀ (x_d Aᵀ)
            INDArray dA = g.mmul(b).transpose().mmul(dropped).muli(s);                   // s (g B)ᵀ x_d
            assertClose(dA, r.getGradients().get("fc1/lora_A"), "step " + step + ": dA with the forward's mask");
            assertClose(dB, r.getGradients().get("fc1/lora_B"), "step " + step + ": dB with the forward's mask");
        }
        Map<String, INDArray> inference = sd.output(feed, "h", "fc1/lora_dropped");
        assertArrayEquals(bits(inference.get("h")), bits(inference.get("fc1/lora_dropped")), "inference: undropped");
    }

    @Test
    void outsideTrainingTheOutputIsExactlyTheUndroppedOne() {
        LoraSameDiffModel dropped = adapted(P);
        LoraSameDiffModel plain = adapted(0.0);
        Map<String, INDArray> feed = feed(6, 5);
        for (int round = 0; round < 2; round++) {
            INDArray expected = plain.sameDiff().output(feed, "fc1").get("fc1");
            assertArrayEquals(bits(expected), bits(dropped.sameDiff().output(feed, "fc1").get("fc1")),
                    "round " + round + ": inference is undropped, bit for bit");
            dropped.sameDiff().fit(new DataSet(feed.get("x"), feed.get("label")));      // training in between
            plain.sameDiff().fit(new DataSet(feed.get("x"), feed.get("label")));
            for (String v : List.of("fc0/lora_A", "fc0/lora_B", "fc1/lora_A", "fc1/lora_B")) {
                plain.sameDiff().getArrForVarName(v).assign(dropped.sameDiff().getArrForVarName(v));
            }
        }
    }

    @Test
    void theSameConfigurationTrainsTheSameBitsAndAnotherSeedOtherOnes() {
        Map<String, INDArray> feed = feed(7, 6);
        DataSet data = new DataSet(feed.get("x"), feed.get("label"));
        long[][] trained = new long[3][];
        for (int k = 0; k < 3; k++) {
            SameDiff sd = Graphs.build(Kind.MMUL, D, 3);
            LoraConfig c = k < 2 ? config(P) : config(P).toBuilder().seed(12).build();
            LoraSameDiffModel model = LoraSameDiff.apply(sd, c, "fc0", "fc1");
            Nd4j.getRandom().setSeed(1000 + k);         // ND4J's generator plays no part
            for (int i = 0; i < 3; i++) {
                sd.fit(data);
            }
            trained[k] = bits(model.adapter("fc1/weight").currentB());
        }
        assertArrayEquals(trained[0], trained[1], "one configuration, one trajectory");
        assertFalse(java.util.Arrays.equals(trained[0], trained[2]), "another seed, other masks (and another A)");
    }

    /** With dropout 0 on a graph that has the dropout ops, the gradients pass through them: central differences. */
    @Test
    void gradientsThroughTheDropoutOpsAtPZeroMatchFiniteDifferences() throws IOException {
        LoraSameDiffModel model = adapted(P);
        SameDiff sd = model.sameDiff();
        // a file with lora_dropout 0 switches it off while the ops stay
        LoraSameDiffModel zero = adapted(0.0);
        zero.save(tmp.resolve("p0"));
        model.load(tmp.resolve("p0"));
        for (LoraSameDiff a : model.adapted().values()) {
            INDArray b = sd.getArrForVarName(a.loraB().name());
            b.assign(gaussian(D, 90 + a.name().length(), 0.5, b.shape()));
        }
        assertEquals(0.0, model.adapter("fc0/weight").config().dropout());
        assertTrue(sd.hasVariable("fc1/lora_dropped"), "the dropout ops stay");
        Map<String, INDArray> feed = feed(8, 4);
        Map<String, INDArray> grads = sd.calculateGradients(feed, "fc0/lora_A", "fc0/lora_B", "fc1/lora_A");
        double worst = 0;
        for (String v : List.of("fc0/lora_A", "fc0/lora_B", "fc1/lora_A")) {
            INDArray p = sd.getArrForVarName(v);
            for (long i = 0; i < p.length(); i++) {
                double orig = p.getDouble(i);
                p.putScalar(i, orig + 1e-6);
                double plus = sd.output(feed, "loss").get("loss").getDouble(0);
                p.putScalar(i, orig - 1e-6);
                double minus = sd.output(feed, "loss").get("loss").getDouble(0);
                p.putScalar(i, orig);
                double numeric = (plus - minus) / 2e-6;
                double analytic = grads.get(v).getDouble(i);
                double diff = Math.abs(analytic - numeric);
                worst = Math.max(worst, diff < 1e-9 ? 0 : diff / (Math.abs(analytic) + Math.abs(numeric)));
            }
        }
        assertTrue(worst < 1e-6, "worst relative error " + worst);
    }

    @Test
    void loadTakesTheFilesDropoutAddingTheOpsAndUnloadTakesThemOut() throws IOException {
        SameDiff original = Graphs.build(Kind.MMUL, D, 3);
        Graphs.Snapshot before = Graphs.snapshot(original);
        LoraSameDiffModel model = LoraSameDiff.apply(original, config(0.0), "fc0", "fc1");
        assertFalse(original.hasVariable("fc0/lora_dropped"), "no dropout, no ops");
        Map<String, INDArray> feed = feed(9, 5);
        original.fit(new DataSet(feed.get("x"), feed.get("label")));     // a gradient function to be rebuilt
        adapted(0.25).save(tmp.resolve("p25"));

        PeftAdapterConfig file = model.load(tmp.resolve("p25"));

        assertEquals(0.25, file.loraDropout());
        assertEquals(0.25, model.adapter("fc1/weight").config().dropout());
        OutAndGrad r = original.calculateGradientsAndOutputs(feed, List.of("fc1/lora_dropped", "h"),
                List.of("fc1/lora_A"));
        INDArray dropped = r.getOutputs().get("fc1/lora_dropped");
        assertTrue(dropped.eq(0).castTo(D).sumNumber().doubleValue() > 0, "training drops out now");
        original.fit(new DataSet(feed.get("x"), feed.get("label")));
        Map<String, INDArray> inference = original.output(feed, "h", "fc1/lora_dropped");
        assertArrayEquals(bits(inference.get("h")), bits(inference.get("fc1/lora_dropped")), "inference: dropped = h");

        model.unload();
        assertEquals(before.ops().keySet(), Graphs.snapshot(original).ops().keySet(), "the original ops again");
        assertEquals(before.variables(), Graphs.snapshot(original).variables(), "the original variables again");
        assertTrue(original.getListeners().stream().noneMatch(l -> l instanceof DropoutMasks), "no listener left");
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        double scale = Math.max(1, expected.amaxNumber().doubleValue());
        double diff = expected.sub(actual).amaxNumber().doubleValue();
        assertTrue(diff <= 1e-12 * scale, what + ": max difference " + diff);
    }
}
