package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.dl4j.LoraParamInitializer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Comparing a network trained by LoraSpark with one trained by DL4J's own fit. */
final class Equivalence {

    /** The tolerance of the issue: relative, in double. */
    static final double TOLERANCE = 1e-10;

    /** The largest relative error seen by any comparison in this JVM (printed by the tests for the record). */
    static double worstSeen;

    private Equivalence() {
    }

    /** Records the sequence of listener calls, with the score and counters the network shows at each. */
    static final class Recorder extends BaseTrainingListener {
        final List<String> events = new ArrayList<>();
        final List<Double> scores = new ArrayList<>();

        @Override
        public void onEpochStart(Model model) {
            events.add("start " + epoch(model));
        }

        @Override
        public void onEpochEnd(Model model) {
            events.add("end " + epoch(model));
        }

        @Override
        public void iterationDone(Model model, int iteration, int epoch) {
            events.add("iteration " + iteration + " epoch " + epoch);
            scores.add(model.score());
        }

        private static int epoch(Model m) {
            return m instanceof MultiLayerNetwork n ? n.getEpochCount() : ((ComputationGraph) m).getEpochCount();
        }
    }

    /**
     * Two identical LoRA networks, one for LoraSpark and one for DL4J's fit, each with a {@link Recorder}, and the
     * parameters they start from.
     */
    static final class Twins<N extends Model> {
        final N spark;
        final N local;
        final Map<String, double[]> before;
        final Recorder sparkEvents = new Recorder();
        final Recorder localEvents = new Recorder();

        Twins(java.util.function.Supplier<N> make) {
            spark = make.get();
            local = make.get();
            assertArrayEquals(bits(local.params()), bits(spark.params()), "same start");
            before = snapshot(layers(spark));
            spark.setListeners(sparkEvents);
            local.setListeners(localEvents);
        }

        /** {@link #assertMatches} of the two, after both have trained; returns the largest relative error. */
        double assertMatch(SparkFitReport report) {
            assertEquals(counts(local), counts(spark), "iteration and epoch counts");
            return assertMatches(layers(spark), layers(local), before, sparkEvents, localEvents, updaterState(spark),
                    updaterState(local), report);
        }

        private static String counts(Model m) {
            return m instanceof MultiLayerNetwork n ? n.getIterationCount() + "/" + n.getEpochCount()
                    : ((ComputationGraph) m).getIterationCount() + "/" + ((ComputationGraph) m).getEpochCount();
        }
    }

    static Layer[] layers(Model m) {
        return m instanceof MultiLayerNetwork n ? n.getLayers() : ((ComputationGraph) m).getLayers();
    }

    /** The updater state, or the parameters for an updater without state (SGD): compared either way. */
    static INDArray updaterState(Model m) {
        INDArray state = m instanceof MultiLayerNetwork n ? n.getUpdater().getStateViewArray()
                : ((ComputationGraph) m).getUpdater().getStateViewArray();
        return state != null ? state : m.params();
    }

    /** Bitwise copies of every parameter, by layer name and key. */
    static Map<String, double[]> snapshot(Layer[] layers) {
        Map<String, double[]> out = new LinkedHashMap<>();
        for (Layer l : layers) {
            for (Map.Entry<String, INDArray> e : l.paramTable().entrySet()) {
                out.put(l.conf().getLayer().getLayerName() + "." + e.getKey(), bits(e.getValue()));
            }
        }
        return out;
    }

    static double[] bits(INDArray a) {
        return a.castTo(org.nd4j.linalg.api.buffer.DataType.DOUBLE).dup('c').data().asDouble();
    }

    /** ‖actual − expected‖∞ / ‖expected‖∞ (absolute when expected is 0). */
    static double relativeError(double[] actual, double[] expected) {
        assertEquals(expected.length, actual.length, "lengths");
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        return scale == 0 ? diff : diff / scale;
    }

    /**
     * The Spark-trained network matches the locally trained one: A and B, updater state and every score within
     * {@link #TOLERANCE}; everything else bitwise equal to {@code before}; the same counters and listener calls.
     *
     * @return the largest relative error found
     */
    static double assertMatches(Layer[] spark, Layer[] local, Map<String, double[]> before, Recorder sparkEvents,
            Recorder localEvents, INDArray sparkUpdater, INDArray localUpdater, SparkFitReport report) {
        double worst = 0;
        boolean trained = false;  // (A moves only once B ≠ 0: after one step only B may have)
        Map<String, double[]> s = snapshot(spark);
        Map<String, double[]> l = snapshot(local);
        for (Map.Entry<String, double[]> e : s.entrySet()) {
            String key = e.getKey().substring(e.getKey().lastIndexOf('.') + 1);
            if (key.equals(LoraParamInitializer.LORA_A_KEY) || key.equals(LoraParamInitializer.LORA_B_KEY)) {
                double err = relativeError(e.getValue(), l.get(e.getKey()));
                assertTrue(err <= TOLERANCE, e.getKey() + ": relative error " + err + " > " + TOLERANCE);
                trained |= relativeError(e.getValue(), before.get(e.getKey())) > 1e-6;
                worst = Math.max(worst, err);
            } else {
                assertArrayEquals(before.get(e.getKey()), e.getValue(), e.getKey() + " changed; expected it bitwise "
                        + "unchanged");
            }
        }
        assertTrue(trained, "no adapter trained");
        double updErr = relativeError(bits(sparkUpdater), bits(localUpdater));
        assertTrue(updErr <= TOLERANCE, "updater state: relative error " + updErr);
        worst = Math.max(worst, updErr);
        assertEquals(localEvents.events, sparkEvents.events, "listener calls");
        double[] expectedScores = localEvents.scores.stream().mapToDouble(Double::doubleValue).toArray();
        double[] scores = report.scores();
        assertEquals(expectedScores.length, scores.length, "steps");
        for (int i = 0; i < scores.length; i++) {
            double err = Math.abs(scores[i] - expectedScores[i]) / Math.abs(expectedScores[i]);
            assertTrue(err <= TOLERANCE, "score of step " + i + ": " + scores[i] + " vs " + expectedScores[i]);
            assertEquals(scores[i], sparkEvents.scores.get(i), 0.0, "the listener sees the step's score");
            worst = Math.max(worst, err);
        }
        worstSeen = Math.max(worstSeen, worst);
        return worst;
    }
}
