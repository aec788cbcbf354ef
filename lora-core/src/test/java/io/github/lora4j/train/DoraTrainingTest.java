package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.train.TrainerResumeTest.STEPS;
import static io.github.lora4j.train.TrainerResumeTest.baseModel;
import static io.github.lora4j.train.TrainerResumeTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.Sgd;

/** The trainer steps DoRA's magnitude with A and B, keeps its optimizer state, saves and resumes it. */
class DoraTrainingTest {

    @TempDir
    Path tmp;

    private static final LoraConfig DORA = LoraConfig.builder().rank(2).alpha(4).useDora(true).build();

    /** {@link TrainerResumeTest#baseModel()} with DoRA on q and v, A, B and m moved off their start. */
    private static LoraModel doraModel(long seed) {
        LoraModel m = baseModel().applyLora(DORA, List.of("q", "v"));
        for (LoraLinear l : m.loraModules().values()) {
            l.setAdapterWeights("default", gaussian(DataType.FLOAT, seed++, 0.3, 2, l.inFeatures()),
                    gaussian(DataType.FLOAT, seed++, 0.3, l.outFeatures(), 2),
                    l.adapter("default").magnitude().mul(gaussian(DataType.FLOAT, seed++, 0.1, l.outFeatures()).add(1)));
        }
        return m;
    }

    @Test
    void anSgdStepMovesAandBandMByTheirGradientsAndNeverW() {
        LoraModel m = doraModel(11);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(0.1)).build(m);
        TrainerResumeTest.forwardBackward(m, 11, 0);
        LoraLinear q = m.module("enc.q");
        LoraAdapter a = q.adapter("default");
        INDArray w = q.weight().dup();
        INDArray expectA = a.a().sub(a.gradA().mul(0.1));
        INDArray expectB = a.b().sub(a.gradB().mul(0.1));
        INDArray expectM = a.magnitude().sub(a.gradMagnitude().mul(0.1));
        assertTrue(a.gradMagnitude().amaxNumber().doubleValue() > 0, "backward gave m a gradient");
        t.step();
        assertBitwiseEquals(expectA, a.a(), "A");
        assertBitwiseEquals(expectB, a.b(), "B");
        assertBitwiseEquals(expectM, a.magnitude(), "m");
        assertEquals(0.0, a.gradMagnitude().amaxNumber().doubleValue(), "dL/dm zeroed");
        assertBitwiseEquals(w, q.weight(), "W is never trained");
        long stateOfAdam = LoraTrainer.builder().updater(new Adam(1e-3)).build(m).updaterStateSize();
        assertEquals(2L * (2 * (8 + 6) + 6 + 2 * (7 + 5) + 5), stateOfAdam, "Adam's state covers A, B and m");
    }

    @Test
    void theGradientNormCoversTheMagnitude() {
        LoraModel m = doraModel(12);
        TrainerResumeTest.forwardBackward(m, 12, 0);
        double sum = 0;
        for (LoraLinear l : m.loraModules().values()) {
            LoraAdapter a = l.adapter("default");
            for (INDArray g : new INDArray[] {a.gradA(), a.gradB(), a.gradMagnitude()}) {
                double n = g.norm2Number().doubleValue();
                sum += n * n;
            }
        }
        double norm = LoraTrainer.builder().updater(new Sgd(0.0)).build(m).step();
        assertEquals(Math.sqrt(sum), norm, 1e-6 * norm, "global gradient norm over A, B and m");
    }

    @Provide
    Arbitrary<IUpdater> updaters() {
        return Arbitraries.of(new Adam(1e-2), new Nesterovs(0.01, 0.9), new AdaBelief(1e-2), new Sgd(0.05));
    }

    @Property(tries = 8)
    void aResumedDoraRunEndsBitwiseWhereTheUninterruptedOneEnds(@ForAll("updaters") IUpdater updater,
                                                                 @ForAll @IntRange(min = 0, max = STEPS) int k,
                                                                 @ForAll @IntRange(min = 1, max = 1000) int seed)
            throws IOException {
        LoraModel uninterrupted = doraModel(seed);
        LoraTrainer tu = LoraTrainer.builder().updater(updater).build(uninterrupted);
        run(uninterrupted, tu, seed, 0, STEPS, -1);

        LoraModel first = doraModel(seed);
        LoraTrainer t1 = LoraTrainer.builder().updater(updater).build(first);
        run(first, t1, seed, 0, k, -1);
        Path dir = java.nio.file.Files.createTempDirectory("lora4j-dora-resume");   // jqwik knows no @TempDir
        first.save(dir, "default");
        t1.saveState(dir);
        LoraModel resumed = baseModel();
        resumed.load(dir, "default");
        LoraTrainer t2 = LoraTrainer.loadState(dir, resumed);
        run(resumed, t2, seed, k, STEPS, -1);
        for (String p : uninterrupted.loraModules().keySet()) {
            LoraAdapter u = uninterrupted.module(p).adapter("default");
            LoraAdapter r = resumed.module(p).adapter("default");
            String what = p + " (" + updater + ", k=" + k + ")";
            assertBitwiseEquals(u.a(), r.a(), what + ": A");
            assertBitwiseEquals(u.b(), r.b(), what + ": B");
            assertBitwiseEquals(u.magnitude(), r.magnitude(), what + ": m");
            INDArray su = tu.updaterStateCopy(uninterrupted.module(p), "default");
            if (su != null) {
                assertBitwiseEquals(su, t2.updaterStateCopy(resumed.module(p), "default"), what + ": updater state");
            }
        }
        TrainerResumeTest.deleteRecursively(dir);
    }

    @Test
    void stateOfDoraAndOfPlainLoraDoNotMix() throws IOException {
        LoraModel dora = doraModel(3);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).build(dora);
        run(dora, t, 3, 0, 2, -1);
        Path doraDir = tmp.resolve("dora");
        t.saveState(doraDir);
        LoraModel plain = baseModel().applyLora(DORA.toBuilder().useDora(false).build(), List.of("q", "v"));
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> LoraTrainer.loadState(doraDir, plain));
        assertTrue(e.getMessage().contains("state for a DoRA lora_magnitude_vector, but the adapter is plain LoRA"),
                e.getMessage());

        LoraTrainer tp = LoraTrainer.builder().updater(new Adam(1e-2)).build(plain);
        run(plain, tp, 3, 0, 2, -1);
        Path plainDir = tmp.resolve("plain");
        tp.saveState(plainDir);
        e = assertThrows(AdapterFormatException.class, () -> LoraTrainer.loadState(plainDir, doraModel(3)));
        assertTrue(e.getMessage().contains("the adapter is DoRA, but the file holds no state for its "
                + "lora_magnitude_vector"), e.getMessage());
    }

    @Test
    void aStepThatWouldMakeTheMagnitudeInfiniteIsRefusedAndChangesNothing() {
        LoraModel m = doraModel(5);
        LoraTrainer t = LoraTrainer.builder().updater(new Sgd(3e38)).build(m);
        LoraAdapter a = m.module("enc.q").adapter("default");
        a.gradMagnitude().putScalar(2, 10f);                      // A and B get no gradient: only m's step overflows
        INDArray mBefore = a.magnitude().dup();
        INDArray aBefore = a.a().dup();
        IllegalStateException e = assertThrows(IllegalStateException.class, t::step);
        assertTrue(e.getMessage().contains("magnitude[2] = "), e.getMessage());
        assertBitwiseEquals(mBefore, a.magnitude(), "m after the refused step");
        assertBitwiseEquals(aBefore, a.a(), "A after the refused step");
        assertEquals(10f, a.gradMagnitude().getFloat(2), "the gradient stays");
        assertEquals(0, t.iteration());
    }

    @Test
    void doraLearnsATargetThatOnlyRescalingReaches() {
        // The target rescales W's rows: DoRA's magnitude can reach it exactly, and the loss must fall far.
        LoraModel m = LoraModel.builder().linear("lin", gaussian(DataType.DOUBLE, 1, 0.5, 6, 10), null).build()
                .applyLora(DORA.toBuilder().rank(2).build(), List.of("lin"));
        INDArray scales = gaussian(DataType.DOUBLE, 2, 0.3, 6, 1).addi(1.0);
        INDArray target = m.module("lin").weight().mulColumnVector(scales);
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(2e-2)).build(m);
        m.train();
        double first = 0;
        double last = 0;
        for (int i = 0; i < 300; i++) {
            INDArray x = gaussian(DataType.DOUBLE, 100 + i, 1, 16, 10);
            INDArray y = m.forward("lin", x);
            INDArray diff = y.sub(x.mmul(target.transpose()));
            double loss = diff.mul(diff).meanNumber().doubleValue();
            first = i == 0 ? loss : first;
            last = loss;
            m.module("lin").backward(diff.mul(2.0 / diff.length()), false);
            t.step();
        }
        assertTrue(last < 1e-3 * first, "loss " + first + " -> " + last);
    }
}
