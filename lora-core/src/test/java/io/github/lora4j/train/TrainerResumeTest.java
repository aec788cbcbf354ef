package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.AMSGrad;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.AdaGrad;
import org.nd4j.linalg.learning.config.AdaMax;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nadam;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.RmsProp;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.schedule.ExponentialSchedule;
import org.nd4j.linalg.schedule.InverseSchedule;
import org.nd4j.linalg.schedule.MapSchedule;
import org.nd4j.linalg.schedule.ScheduleType;
import org.nd4j.linalg.schedule.StepSchedule;

/**
 * Issue 14: a run saved after {@code k} of {@code N} steps ({@link LoraModel#save} + {@link LoraTrainer#saveState}),
 * loaded into a fresh model built from the base weights ({@link LoraModel#load} + {@link LoraTrainer#loadState}) and
 * continued, ends bit for bit where the uninterrupted run ends: A, B, the updater state, iteration and epoch.
 */
class TrainerResumeTest {

    static final int STEPS = 6;
    private static final int IN = 8;
    private static final int HIDDEN = 6;
    private static final int MID = 7;
    private static final int OUT = 5;
    private static final int ROWS = 4;

    /**
     * {@code x [n, 8] -> enc.q [6, 8] -> enc.mid [7, 6] (no LoRA) -> dec.v [5, 7]}, FLOAT, from fixed seeds; each
     * call returns new arrays with the same values.
     */
    static LoraModel baseModel() {
        return LoraModel.builder()
                .linear("enc.q", gaussian(DataType.FLOAT, 900, 0.4, HIDDEN, IN), gaussian(DataType.FLOAT, 901, 0.1, HIDDEN))
                .linear("enc.mid", gaussian(DataType.FLOAT, 902, 0.4, MID, HIDDEN), null)
                .linear("dec.v", gaussian(DataType.FLOAT, 903, 0.4, OUT, MID), gaussian(DataType.FLOAT, 904, 0.1, OUT))
                .build();
    }

    /** The base model with LoRA on q and v, A and B random (B non-zero, so both factors learn from step 1). */
    static LoraModel startModel(long seed) {
        LoraModel m = baseModel().applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("q", "v"));
        for (LoraLinear l : m.loraModules().values()) {
            l.setAdapterWeights("default", gaussian(DataType.FLOAT, seed++, 0.3, 2, l.inFeatures()),
                    gaussian(DataType.FLOAT, seed++, 0.3, l.outFeatures(), 2));
        }
        return m;
    }

    /** Forward through the chain, MSE gradient back through it; the data of step {@code t} come from the seed. */
    static void forwardBackward(LoraModel m, long seed, int t) {
        m.train();
        INDArray x = gaussian(DataType.FLOAT, seed * 1000 + 2 * t, 1, ROWS, IN);
        INDArray target = gaussian(DataType.FLOAT, seed * 1000 + 2 * t + 1, 1, ROWS, OUT);
        INDArray y = m.forward("dec.v", m.forward("enc.mid", m.forward("enc.q", x)));
        INDArray g = y.sub(target).divi(ROWS);
        m.module("enc.q").backward(m.module("enc.mid").backward(m.module("dec.v").backward(g)));
    }

    /** Steps {@code from .. to-1}; the epoch advances after step {@code epochAt}. */
    static void run(LoraModel m, LoraTrainer t, long seed, int from, int to, int epochAt) {
        for (int i = from; i < to; i++) {
            forwardBackward(m, seed, i);
            t.step();
            if (i == epochAt) {
                t.nextEpoch();
            }
        }
    }

    @Provide
    Arbitrary<IUpdater> updaters() {
        return Arbitraries.of(
                new Adam(1e-2),
                new Nesterovs(0.01, 0.9),
                new AdaBelief(1e-2),
                new Sgd(new StepSchedule(ScheduleType.ITERATION, 0.02, 0.5, 2)),
                new Adam(new ExponentialSchedule(ScheduleType.EPOCH, 1e-2, 0.5)),
                new Nesterovs(new InverseSchedule(ScheduleType.ITERATION, 0.01, 0.2, 1.5),
                        new MapSchedule(ScheduleType.ITERATION, java.util.Map.of(0, 0.5, 3, 0.9))),
                new AMSGrad(1e-2), new AdaMax(1e-2), new Nadam(1e-2), new RmsProp(1e-2), new AdaGrad(1e-2),
                new AdaDelta());
    }

    @Property(tries = 20)
    void aResumedRunEndsBitwiseWhereTheUninterruptedOneEnds(@ForAll("updaters") IUpdater updater,
                                                             @ForAll @IntRange(min = 0, max = STEPS) int k,
                                                             @ForAll @IntRange(min = -1, max = STEPS) int epochAt,
                                                             @ForAll boolean clip, @ForAll boolean decay,
                                                             @ForAll @IntRange(min = 1, max = 1000) int seed)
            throws IOException {
        LoraTrainer.Builder b = LoraTrainer.builder().updater(updater);
        if (clip) {
            b.clipGradientNorm(0.5);
        }
        if (decay) {
            b.weightDecay(0.01);
        }
        LoraModel uninterrupted = startModel(seed);
        LoraTrainer tu = b.build(uninterrupted);
        run(uninterrupted, tu, seed, 0, STEPS, epochAt);

        LoraModel first = startModel(seed);
        LoraTrainer t1 = b.build(first);
        run(first, t1, seed, 0, k, epochAt);
        Path dir = Files.createTempDirectory("lora4j-resume");
        try {
            first.save(dir, "default");
            t1.saveState(dir);
            LoraModel resumed = baseModel();
            resumed.load(dir, "default");
            LoraTrainer t2 = LoraTrainer.loadState(dir, resumed);
            assertEquals(k, t2.iteration(), "iteration after loading");
            run(resumed, t2, seed, k, STEPS, epochAt);

            assertEquals(tu.iteration(), t2.iteration(), "iteration");
            assertEquals(tu.epoch(), t2.epoch(), "epoch");
            assertEquals(tu.updater(), t2.updater(), "updater configuration");
            assertEquals(tu.clipGradientNorm(), t2.clipGradientNorm(), "clip threshold");
            assertEquals(tu.weightDecay(), t2.weightDecay(), "weight decay");
            for (String p : uninterrupted.loraModules().keySet()) {
                LoraLinear u = uninterrupted.module(p);
                LoraLinear r = resumed.module(p);
                String what = p + " (" + updater + ", k=" + k + ")";
                assertBitwiseEquals(u.loraA("default"), r.loraA("default"), what + ": A");
                assertBitwiseEquals(u.loraB("default"), r.loraB("default"), what + ": B");
                INDArray su = tu.updaterStateCopy(u, "default");
                INDArray sr = t2.updaterStateCopy(r, "default");
                if (su == null) {
                    assertNull(sr, what + ": a stateless updater has no state after resuming either");
                } else {
                    assertNotNull(sr, what + ": updater state after resuming");
                    assertBitwiseEquals(su, sr, what + ": updater state");
                }
                assertBitwiseEquals(u.weight(), r.weight(), what + ": W");
            }
        } finally {
            deleteRecursively(dir);
        }
    }

    /**
     * With dropout, the masks come from each adapter's stream inside its layer, which the state files cannot hold;
     * on the same layer objects (saved and loaded in one process) the stream simply continues, so a trainer loaded
     * from the files still continues bit for bit.
     */
    @Test
    void onTheSameLayersAResumedRunIsBitwiseEvenWithDropout() throws IOException {
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).dropout(0.3).seed(7).build();
        LoraModel uninterrupted = baseModel().applyLora(cfg, List.of("q", "v"));
        LoraModel interrupted = baseModel().applyLora(cfg, List.of("q", "v"));
        IUpdater adam = new Adam(1e-2);
        LoraTrainer tu = LoraTrainer.builder().updater(adam).build(uninterrupted);
        LoraTrainer t1 = LoraTrainer.builder().updater(adam).build(interrupted);
        run(uninterrupted, tu, 3, 0, STEPS, -1);
        run(interrupted, t1, 3, 0, 2, -1);
        Path dir = Files.createTempDirectory("lora4j-resume");
        try {
            t1.saveState(dir);
            LoraTrainer t2 = LoraTrainer.loadState(dir, interrupted);
            run(interrupted, t2, 3, 2, STEPS, -1);
            for (String p : uninterrupted.loraModules().keySet()) {
                assertBitwiseEquals(uninterrupted.module(p).loraA("default"), interrupted.module(p).loraA("default"),
                        p + ": A");
                assertBitwiseEquals(uninterrupted.module(p).loraB("default"), interrupted.module(p).loraB("default"),
                        p + ": B");
            }
        } finally {
            deleteRecursively(dir);
        }
    }

    static void deleteRecursively(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
