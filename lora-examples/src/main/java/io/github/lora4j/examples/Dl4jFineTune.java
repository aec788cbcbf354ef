package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.dl4j.LoraDl4j;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Example 5: LoRA inside a DL4J network, trained by the network's own {@code fit()}. A {@code MultiLayerNetwork}
 * {@code 16 → 64 → 64 → 8} (ReLU, softmax) learns task A with {@code fit()}; {@link LoraDl4j#apply} turns its three
 * dense layers into LoRA layers (frozen {@code W}, {@code b}; trainable {@code loraA}, {@code loraB}); {@code fit()}
 * on task B trains only the adapters; {@link LoraDl4j#mergeAndUnload} gives back a plain DL4J network that predicts
 * the same. The tasks are {@link FineTuneDemo}'s: task B is task A seen through a 90° rotation of the informative
 * input planes, which a rank-4 change of the first layer undoes.
 *
 * <pre>
 * mvn -B -q -Pexample -DskipTests -pl lora-examples -am package -Dexample=io.github.lora4j.examples.Dl4jFineTune
 * </pre>
 */
public final class Dl4jFineTune {

    private Dl4jFineTune() {
    }

    /**
     * What to run.
     *
     * @param data    the tasks and their sizes ({@link FineTuneDemo.Config}: input size, hidden width, classes,
     *                examples, epochs, batch, rotation, seed); its first rank is the LoRA rank
     * @param alpha   LoRA's {@code lora_alpha}
     * @param lr      Adam's learning rate, for task A and for the adapters
     */
    public record Config(FineTuneDemo.Config data, double alpha, double lr) {

        /** Validates the fields, naming the field, the value and the allowed range. */
        public Config {
            if (data == null) {
                throw new IllegalArgumentException("data: expected a FineTuneDemo.Config, got null");
            }
            if (!(alpha > 0) || !(lr > 0)) {
                throw new IllegalArgumentException("alpha/lr: expected > 0, got " + alpha + "/" + lr);
            }
        }

        /** The LoRA rank: the first of {@code data.ranks()}. */
        public int rank() {
            return data.ranks().get(0);
        }

        /** The configuration the example runs: a few seconds on a quiet machine (about 500 fit() iterations). */
        public static Config defaults() {
            return new Config(new FineTuneDemo.Config(16, 64, 8, 2, 3000, 1200, 2000, 12, 15, 100, List.of(4), 90.0,
                    1, 7L, false), 8, 1e-2);
        }

        /** A smaller configuration for the smoke test. */
        public static Config smoke() {
            return new Config(new FineTuneDemo.Config(16, 64, 8, 2, 1600, 800, 1000, 10, 10, 64, List.of(4), 90.0,
                    1, 7L, false), 8, 5e-3);
        }
    }

    /**
     * What the example measured.
     *
     * @param accuracyA            the base network on task A's test set
     * @param accuracyBBefore      the base network on task B's test set (before adaptation)
     * @param accuracyBAfter       the LoRA network on task B after {@code fit()} on B
     * @param accuracyAAfter       the LoRA network on task A after that (what the shift costs on A)
     * @param trainableParameters  parameters {@code fit()} updates in the LoRA network: {@code Σ r·(in + out)}
     * @param totalParameters      all parameters of the LoRA network ({@code numParams()})
     * @param baseParameters       all parameters of the base network
     * @param updaterState         elements of the LoRA network's updater state (Adam: two per trainable parameter)
     * @param frozenUnchanged      whether every {@code W} and {@code b} was bitwise the base network's after training
     * @param predictionMismatches test rows of B where the unloaded network predicts another class than the LoRA one
     * @param maxProbabilityDiff   largest {@code |p_unloaded − p_lora|} over B's test set
     * @param layerShapes          {@code [nIn, nOut]} of each layer
     */
    public record Result(double accuracyA, double accuracyBBefore, double accuracyBAfter, double accuracyAAfter,
                         long trainableParameters, long totalParameters, long baseParameters, long updaterState,
                         boolean frozenUnchanged, int predictionMismatches, double maxProbabilityDiff,
                         List<long[]> layerShapes) {
    }

    /** The base network, initialised: {@code inputDim → hidden → hidden → classes}, in FLOAT. */
    static MultiLayerNetwork baseNetwork(Config c) {
        return baseNetwork(c, DataType.FLOAT);
    }

    /** {@link #baseNetwork(Config)} in {@code type} (the Spark example's {@code --verify} runs in DOUBLE). */
    static MultiLayerNetwork baseNetwork(Config c, DataType type) {
        FineTuneDemo.Config d = c.data();
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(d.seed()).dataType(type).updater(new Adam(c.lr())).weightInit(WeightInit.RELU)
                .list()
                .layer(new DenseLayer.Builder().nIn(d.inputDim()).nOut(d.hidden()).activation(Activation.RELU).build())
                .layer(new DenseLayer.Builder().nIn(d.hidden()).nOut(d.hidden()).activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(d.hidden()).nOut(d.classes())
                        .activation(Activation.SOFTMAX).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    private static DataSet dataSet(FineTuneDemo.Config d, double[][] centres, int n, long seed, boolean rotate) {
        FineTuneDemo.Data s = FineTuneDemo.sample(d, centres, n, seed, rotate);
        return new DataSet(s.x(), s.oneHot());
    }

    private static void fit(MultiLayerNetwork net, DataSet train, int epochs, int batch) {
        net.fit(new ListDataSetIterator<>(train.asList(), batch), epochs);
    }

    private static double accuracy(MultiLayerNetwork net, DataSet test) {
        return net.evaluate(new ListDataSetIterator<>(test.asList(), 500)).accuracy();
    }

    /** Runs the example and prints its report to {@code out}. */
    public static Result run(Config c, PrintStream out) {
        FineTuneDemo.Config d = c.data();
        double[][] centres = FineTuneDemo.blobCentres(d);
        DataSet trainA = dataSet(d, centres, d.trainA(), d.seed() + 1, false);
        DataSet testA = dataSet(d, centres, d.test(), d.seed() + 2, false);
        DataSet trainB = dataSet(d, centres, d.trainB(), d.seed() + 3, true);
        DataSet testB = dataSet(d, centres, d.test(), d.seed() + 4, true);

        MultiLayerNetwork base = baseNetwork(c);
        fit(base, trainA, d.epochsA(), d.batch());
        double accA = accuracy(base, testA);
        double accBBefore = accuracy(base, testB);

        LoraConfig lora = LoraConfig.builder().rank(c.rank()).alpha(c.alpha()).seed(d.seed()).build();
        MultiLayerNetwork adapted = LoraDl4j.apply(base, lora, "layer0", "layer1", "layer2");
        fit(adapted, trainB, d.epochsB(), d.batch());
        double accBAfter = accuracy(adapted, testB);
        double accAAfter = accuracy(adapted, testA);

        boolean frozenUnchanged = true;
        List<long[]> shapes = new ArrayList<>();
        for (int i = 0; i < base.getnLayers(); i++) {
            for (String key : List.of("W", "b")) {
                frozenUnchanged &= base.getLayer(i).getParam(key).equals(adapted.getLayer(i).getParam(key))
                        && base.getLayer(i).getParam(key).sub(adapted.getLayer(i).getParam(key)).amaxNumber()
                        .doubleValue() == 0;
            }
            long[] w = base.getLayer(i).getParam("W").shape();
            shapes.add(new long[] {w[0], w[1]});
        }

        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(adapted);
        INDArray pLora = adapted.output(testB.getFeatures());
        INDArray pPlain = plain.output(testB.getFeatures());
        int[] classesLora = pLora.argMax(1).toIntVector();
        int[] classesPlain = pPlain.argMax(1).toIntVector();
        int mismatches = 0;
        for (int i = 0; i < classesLora.length; i++) {
            mismatches += classesLora[i] == classesPlain[i] ? 0 : 1;
        }
        double maxDiff = pLora.sub(pPlain).amaxNumber().doubleValue();

        Result r = new Result(accA, accBBefore, accBAfter, accAAfter, LoraDl4j.trainableParameterCount(adapted),
                adapted.numParams(), base.numParams(), adapted.getUpdater().getStateViewArray().length(),
                frozenUnchanged, mismatches, maxDiff, shapes);
        print(out, c, r, plain);
        return r;
    }

    private static void print(PrintStream out, Config c, Result r, MultiLayerNetwork plain) {
        FineTuneDemo.Config d = c.data();
        out.printf(Locale.ROOT, "DL4J MultiLayerNetwork %d → %d → %d → %d, task A: %d examples, %d epochs%n",
                d.inputDim(), d.hidden(), d.hidden(), d.classes(), d.trainA(), d.epochsA());
        out.printf(Locale.ROOT, "  accuracy on A: %.3f   on B (rotated inputs) before adaptation: %.3f%n",
                r.accuracyA(), r.accuracyBBefore());
        out.printf(Locale.ROOT, "LoRA r=%d, alpha=%s on layer0, layer1, layer2; fit() on B: %d examples, %d epochs%n",
                c.rank(), c.alpha(), d.trainB(), d.epochsB());
        out.printf(Locale.ROOT, "  accuracy on B: %.3f   on A afterwards: %.3f%n", r.accuracyBAfter(),
                r.accuracyAAfter());
        out.printf(Locale.ROOT, "  trainable params: %,d of %,d (%.2f %%; base network %,d); updater state %,d elements%n",
                r.trainableParameters(), r.totalParameters(), 100.0 * r.trainableParameters() / r.totalParameters(),
                r.baseParameters(), r.updaterState());
        out.printf(Locale.ROOT, "  W and b bitwise unchanged by fit(): %b%n", r.frozenUnchanged());
        out.printf(Locale.ROOT, "mergeAndUnload → plain %s: %d of %d predictions differ, max |Δp| = %.2e%n",
                plain.getLayer(0).getClass().getSimpleName() + "/" + plain.getLayer(2).getClass().getSimpleName(),
                r.predictionMismatches(), d.test(), r.maxProbabilityDiff());
    }

    /** Entry point: runs {@link Config#defaults()}; {@code --smoke} runs the small configuration. */
    public static void main(String[] args) {
        Config c = args.length == 1 && args[0].equals("--smoke") ? Config.smoke() : Config.defaults();
        if (args.length > 1 || (args.length == 1 && !args[0].equals("--smoke"))) {
            throw new IllegalArgumentException("expected no option or --smoke, got " + String.join(" ", args));
        }
        FineTuneDemo.limitNativeThreads(1);
        long t0 = System.nanoTime();
        run(c, System.out);
        System.out.printf(Locale.ROOT, "Total wall time %.1f s%n", (System.nanoTime() - t0) / 1e9);
    }
}
