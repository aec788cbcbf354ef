package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.train.LoraTrainer;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * Example 3: pre-train a small MLP on task A, then adapt it to a shifted task B three ways (no adaptation, full
 * fine-tuning, LoRA at several ranks) and compare accuracy on B, trainable parameters and wall time; finally merge
 * the LoRA adapters into the weights and show that the merged model predicts the same at base-model cost.
 *
 * <h2>The tasks</h2>
 * Inputs are {@code [n, 16]}: 4 informative coordinates and 12 noise coordinates. Task A has 8 classes, each a
 * mixture of 2 Gaussian blobs in the informative coordinates. Task B is the same data seen through a rotation of
 * the two informative planes (coordinates 0–1 and 2–3) by 90°: a domain shift. Undoing it needs the first layer to
 * change by {@code W (R^T − I)}, a rank-4 update, so LoRA with {@code r ≥ 4} can adapt fully and {@code r = 1} only
 * partly.
 *
 * <h2>The model</h2>
 * {@code 16 → 64 → 64 → 8} with ReLU and softmax cross-entropy. Pre-training uses plain ND4J arrays owned by this
 * class (it needs {@code dW}, which {@link LoraLinear} never computes) with ND4J's Adam; the resulting weights are
 * then wrapped, not copied, by {@link LoraLinear#base} and given one adapter per rank. Full fine-tuning trains a
 * copy of all weights and biases. LoRA trains only A and B through {@link LoraTrainer}; {@code W} stays bitwise
 * unchanged, so switching the adapters off gives back the task-A model exactly.
 *
 * <pre>
 * mvn -B -q -Pexample -DskipTests -pl lora-examples -am package -Dexample=io.github.lora4j.examples.FineTuneDemo
 * </pre>
 */
public final class FineTuneDemo {

    /** Informative input coordinates; the rest are noise. Must be even (rotated in planes) and at most {@code inputDim}. */
    static final int INFORMATIVE = 4;

    private FineTuneDemo() {
    }

    /**
     * What to run.
     *
     * @param inputDim        input features (≥ {@value #INFORMATIVE})
     * @param hidden          width of both hidden layers
     * @param classes         number of classes
     * @param blobsPerClass   Gaussian blobs per class
     * @param trainA          training examples of task A
     * @param trainB          training examples of task B (adaptation data)
     * @param test            test examples of each task
     * @param epochsA         pre-training epochs
     * @param epochsB         adaptation epochs (each method)
     * @param batch           mini-batch size
     * @param ranks           LoRA ranks to compare; the largest is merged at the end
     * @param rotationDegrees the task shift: rotation of each informative plane
     * @param timingRepeats   timed forward passes over the test set in each state (unmerged, merged, base), interleaved
     * @param seed            seed of data, shuffling and adapter initialisation
     * @param progress        show a progress bar on stderr while training
     */
    public record Config(int inputDim, int hidden, int classes, int blobsPerClass, int trainA, int trainB, int test,
                         int epochsA, int epochsB, int batch, List<Integer> ranks, double rotationDegrees,
                         int timingRepeats, long seed, boolean progress) {

        /** Validates every field, naming the field, the value and the allowed range. */
        public Config {
            require(inputDim >= INFORMATIVE, "inputDim", inputDim, ">= " + INFORMATIVE);
            require(hidden >= 1, "hidden", hidden, ">= 1");
            require(classes >= 2, "classes", classes, ">= 2");
            require(blobsPerClass >= 1, "blobsPerClass", blobsPerClass, ">= 1");
            require(trainA >= 1 && trainB >= 1 && test >= 1, "trainA/trainB/test", trainA + "/" + trainB + "/" + test, ">= 1");
            require(epochsA >= 1 && epochsB >= 1, "epochsA/epochsB", epochsA + "/" + epochsB, ">= 1");
            require(batch >= 1, "batch", batch, ">= 1");
            require(timingRepeats >= 1, "timingRepeats", timingRepeats, ">= 1");
            ranks = List.copyOf(ranks);
            require(!ranks.isEmpty(), "ranks", ranks, "not empty");
            int maxRank = Math.min(Math.min(inputDim, hidden), classes);
            for (int r : ranks) {
                require(r >= 1 && r <= maxRank, "ranks", ranks, "each in 1.." + maxRank + " (min of the layer sizes)");
            }
        }

        /** The configuration the example runs: about half a minute on two cores. */
        public static Config defaults() {
            return new Config(16, 64, 8, 2, 6000, 2000, 2000, 30, 25, 64, List.of(1, 4, 8), 90.0, 100, 7L, true);
        }

        /** A small, quick configuration for the smoke test: fewer examples and epochs, no progress bar. */
        public static Config smoke() {
            return new Config(16, 64, 8, 2, 2400, 1000, 1000, 15, 15, 64, List.of(1, 4, 8), 90.0, 5, 7L, false);
        }

        private static void require(boolean ok, String field, Object value, String allowed) {
            if (!ok) {
                throw new IllegalArgumentException(field + ": expected " + allowed + ", got " + value);
            }
        }
    }

    /**
     * One way of adapting to task B.
     *
     * @param name                "no adaptation", "full fine-tuning" or "LoRA r=…"
     * @param rank                LoRA rank, 0 for the other two
     * @param accuracyB           accuracy on the task-B test set, in {@code [0, 1]}
     * @param accuracyA           accuracy on the task-A test set of the adapted model (forgetting)
     * @param trainableParameters parameters the method trains
     * @param optimizerState      elements of Adam state the method keeps
     * @param seconds             wall time of the adaptation (training only)
     */
    public record Method(String name, int rank, double accuracyB, double accuracyA, long trainableParameters,
                         long optimizerState, double seconds) {
    }

    /**
     * Merged against unmerged inference of the largest-rank adapter, over the task-B test set.
     *
     * @param rank               the merged adapter's rank
     * @param testPoints         rows compared
     * @param argmaxMismatches   rows whose predicted class differs (0 expected)
     * @param maxAbsLogitDiff    largest {@code |logit_merged − logit_unmerged|}
     * @param weightsRestored    whether every {@code W} was bitwise the pre-trained one after all LoRA training and
     *                           all merge/unmerge cycles
     * @param mergeCycles        merge/unmerge cycles run before that comparison
     * @param unmergedMillis     median milliseconds per forward of the whole test set with the adapter unmerged
     * @param mergedMillis       the same, merged (one gemm per layer, as the base model)
     * @param baseMillis         the same, with adapters disabled (the base model)
     */
    public record MergeCheck(int rank, int testPoints, int argmaxMismatches, double maxAbsLogitDiff,
                             boolean weightsRestored, int mergeCycles, double unmergedMillis, double mergedMillis,
                             double baseMillis) {
    }

    /**
     * Everything the demo measured.
     *
     * @param accuracyAPretrained pre-trained model on the task-A test set
     * @param pretrainSeconds     wall time of pre-training
     * @param methods             no adaptation, full fine-tuning, then LoRA per rank
     * @param merge               the merge check
     * @param layerShapes         {@code [in, out]} of each layer, for counting parameters
     */
    public record Result(double accuracyAPretrained, double pretrainSeconds, List<Method> methods, MergeCheck merge,
                         List<long[]> layerShapes) {

        /** The method called {@code name}. */
        public Method method(String name) {
            return methods.stream().filter(m -> m.name().equals(name)).findFirst()
                    .orElseThrow(() -> new IllegalArgumentException("no method '" + name + "'; have "
                            + methods.stream().map(Method::name).toList()));
        }
    }

    // ---------------------------------------------------------------- data

    /** Inputs {@code [n, inputDim]} (FLOAT), labels, and one-hot targets {@code [n, classes]}. */
    record Data(INDArray x, int[] labels, INDArray oneHot) {
        int size() {
            return labels.length;
        }
    }

    /** Blob centres in the informative coordinates, {@code classes·blobsPerClass} of them, kept apart. */
    static double[][] blobCentres(Config c) {
        Random rnd = new Random(c.seed());
        int n = c.classes() * c.blobsPerClass();
        double[][] centres = new double[n][];
        for (int i = 0; i < n; i++) {
            // Rejection keeps blobs at least 1.6 apart (about 3.5 standard deviations): task A is learnable.
            for (int attempt = 0; ; attempt++) {
                double[] p = new double[INFORMATIVE];
                for (int j = 0; j < INFORMATIVE; j++) {
                    p[j] = -2.5 + 5 * rnd.nextDouble();
                }
                boolean apart = true;
                for (int q = 0; q < i && apart; q++) {
                    double d2 = 0;
                    for (int j = 0; j < INFORMATIVE; j++) {
                        d2 += (p[j] - centres[q][j]) * (p[j] - centres[q][j]);
                    }
                    apart = d2 >= 1.6 * 1.6;
                }
                if (apart || attempt > 10_000) {
                    centres[i] = p;
                    break;
                }
            }
        }
        return centres;
    }

    /** {@code n} examples; task B ({@code rotate = true}) rotates both informative planes by the configured angle. */
    static Data sample(Config c, double[][] centres, int n, long seed, boolean rotate) {
        Random rnd = new Random(seed);
        float[][] x = new float[n][c.inputDim()];
        int[] labels = new int[n];
        float[][] oneHot = new float[n][c.classes()];
        double angle = Math.toRadians(c.rotationDegrees());
        double cos = Math.cos(angle);
        double sin = Math.sin(angle);
        for (int i = 0; i < n; i++) {
            int blob = rnd.nextInt(centres.length);
            int label = blob % c.classes();
            double[] z = new double[c.inputDim()];
            for (int j = 0; j < INFORMATIVE; j++) {
                z[j] = centres[blob][j] + 0.45 * rnd.nextGaussian();
            }
            for (int j = INFORMATIVE; j < c.inputDim(); j++) {
                z[j] = rnd.nextGaussian();
            }
            if (rotate) {
                for (int p = 0; p < INFORMATIVE; p += 2) {
                    double a = z[p];
                    double b = z[p + 1];
                    z[p] = cos * a - sin * b;
                    z[p + 1] = sin * a + cos * b;
                }
            }
            for (int j = 0; j < c.inputDim(); j++) {
                x[i][j] = (float) z[j];
            }
            labels[i] = label;
            oneHot[i][label] = 1f;
        }
        return new Data(Nd4j.createFromArray(x), labels, Nd4j.createFromArray(oneHot));
    }

    // ---------------------------------------------------------------- the network, as plain arrays

    /**
     * An MLP of plain ND4J arrays that this example owns and trains fully: {@code W_l [out, in]}, {@code b_l [1, out]},
     * ReLU between layers. Used for pre-training and for full fine-tuning (on a copy).
     */
    static final class Mlp {
        final List<INDArray> weights = new ArrayList<>();
        final List<INDArray> biases = new ArrayList<>();
        private final List<INDArray> gradW = new ArrayList<>();
        private final List<INDArray> gradB = new ArrayList<>();
        private final List<GradientUpdater<?>> updaters = new ArrayList<>();
        private final List<INDArray> inputs = new ArrayList<>();
        private final Map<Long, INDArray> onesByRows = new HashMap<>();
        private long stateSize;

        /** A cached column of ones {@code [n, 1]}, for bias terms as gemms. */
        private INDArray ones(long n) {
            return onesByRows.computeIfAbsent(n, k -> Nd4j.ones(DataType.FLOAT, k, 1));
        }

        /** He-initialised layers of the given widths, e.g. {@code 16, 64, 64, 8}; seeds ND4J's global RNG. */
        Mlp(int[] widths, long seed) {
            Nd4j.getRandom().setSeed(seed);
            for (int l = 0; l + 1 < widths.length; l++) {
                INDArray w = Nd4j.randn(DataType.FLOAT, widths[l + 1], widths[l]).muli(Math.sqrt(2.0 / widths[l]));
                weights.add(w);
                biases.add(Nd4j.zeros(DataType.FLOAT, 1, widths[l + 1]));
            }
        }

        private Mlp() {
        }

        /** A deep copy: full fine-tuning trains this, leaving the pre-trained arrays alone. */
        Mlp copy() {
            Mlp m = new Mlp();
            for (int l = 0; l < weights.size(); l++) {
                m.weights.add(weights.get(l).dup('c'));
                m.biases.add(biases.get(l).dup('c'));
            }
            return m;
        }

        long parameterCount() {
            long n = 0;
            for (int l = 0; l < weights.size(); l++) {
                n += weights.get(l).length() + biases.get(l).length();
            }
            return n;
        }

        /** Logits {@code [n, classes]}; with {@code keep} the layer inputs are kept for {@link #backward}. */
        INDArray forward(INDArray x, boolean keep) {
            inputs.clear();
            INDArray a = x;
            for (int l = 0; l < weights.size(); l++) {
                if (keep) {
                    inputs.add(a);
                }
                INDArray w = weights.get(l);
                INDArray y = Nd4j.createUninitialized(DataType.FLOAT, a.rows(), w.rows());
                // y = 1 b + a W^T as two gemms (the bias as a rank-1 product), no broadcast op.
                Nd4j.gemm(ones(a.rows()), biases.get(l), y, false, false, 1.0, 0.0);
                Nd4j.gemm(a, w, y, false, true, 1.0, 1.0);
                a = l + 1 < weights.size() ? Transforms.relu(y, false) : y;
            }
            return a;
        }

        /** Back-propagates {@code dL/dlogits} through the kept forward, filling dW and db. */
        void backward(INDArray g) {
            if (gradW.isEmpty()) {
                for (int l = 0; l < weights.size(); l++) {
                    gradW.add(Nd4j.zeros(DataType.FLOAT, weights.get(l).shape()));
                    gradB.add(Nd4j.zeros(DataType.FLOAT, biases.get(l).shape()));
                }
            }
            for (int l = weights.size() - 1; l >= 0; l--) {
                INDArray a = inputs.get(l);
                Nd4j.gemm(g, a, gradW.get(l), true, false, 1.0, 0.0);   // dW = g^T a   [out, in]
                Nd4j.gemm(ones(g.rows()), g, gradB.get(l), true, false, 1.0, 0.0); // db = 1^T g [1, out]
                if (l > 0) {
                    INDArray dx = Nd4j.createUninitialized(DataType.FLOAT, g.rows(), a.columns());
                    Nd4j.gemm(g, weights.get(l), dx, false, false, 1.0, 0.0); // dx = g W  [n, in]
                    g = dx.muli(a.gt(0).castTo(DataType.FLOAT));             // through the ReLU that made a
                }
            }
        }

        /** One Adam step on every weight and bias (ND4J's Adam, one updater per contiguous array). */
        void adamStep(Adam adam, int iteration) {
            if (updaters.isEmpty()) {
                for (int l = 0; l < weights.size(); l++) {
                    for (INDArray p : new INDArray[] {weights.get(l), biases.get(l)}) {
                        long s = adam.stateSize(p.length());
                        updaters.add(adam.instantiate(Nd4j.zeros(DataType.FLOAT, 1, s), true));
                        stateSize += s;
                    }
                }
            }
            for (int l = 0; l < weights.size(); l++) {
                updaters.get(2 * l).applyUpdater(gradW.get(l), iteration, 0);
                weights.get(l).subi(gradW.get(l));
                updaters.get(2 * l + 1).applyUpdater(gradB.get(l), iteration, 0);
                biases.get(l).subi(gradB.get(l));
            }
        }

        long optimizerStateSize() {
            return stateSize;
        }
    }

    // ---------------------------------------------------------------- the same network on LoraLinear layers

    /** Logits of the LoRA-wrapped network; layers must be in the matching train/eval mode. */
    static INDArray forward(List<LoraLinear> layers, INDArray x) {
        return forward(layers, x, null);
    }

    /** Logits of the LoRA-wrapped network; when {@code reluOutputs} is non-null the hidden activations are added to it. */
    static INDArray forward(List<LoraLinear> layers, INDArray x, List<INDArray> reluOutputs) {
        INDArray a = x;
        for (int l = 0; l < layers.size(); l++) {
            INDArray y = layers.get(l).forward(a);
            if (l + 1 < layers.size()) {
                a = Transforms.relu(y, false);
                if (reluOutputs != null) {
                    reluOutputs.add(a);
                }
            } else {
                a = y;
            }
        }
        return a;
    }

    /**
     * Back-propagates through a training-mode {@link #forward(List, INDArray, List)}; fills gradA/gradB only. The first
     * layer's input is data and needs no gradient: {@code backward(g, false)} skips its {@code dL/dx}, one gemm of
     * that layer's W per step.
     */
    static void backward(List<LoraLinear> layers, List<INDArray> reluOutputs, INDArray g) {
        for (int l = layers.size() - 1; l >= 0; l--) {
            INDArray dx = layers.get(l).backward(g, l > 0);
            if (l > 0) {
                g = dx.muli(reluOutputs.get(l - 1).gt(0).castTo(DataType.FLOAT));
            }
        }
    }

    // ---------------------------------------------------------------- loss, accuracy, batches

    /** Softmax cross-entropy: returns {@code dL/dlogits = (softmax − onehot)/n}; {@code loss[0]} gets the mean loss. */
    static INDArray crossEntropyGrad(INDArray logits, INDArray oneHot, double[] loss) {
        INDArray p = Transforms.softmax(logits, true);
        double n = logits.rows();
        loss[0] = -Transforms.log(p.mul(oneHot).sum(1).addi(1e-12f), false).sumNumber().doubleValue() / n;
        return p.subi(oneHot).divi(n);
    }

    static double accuracy(INDArray logits, int[] labels) {
        int[] pred = logits.argMax(1).toIntVector();
        int ok = 0;
        for (int i = 0; i < labels.length; i++) {
            ok += pred[i] == labels[i] ? 1 : 0;
        }
        return (double) ok / labels.length;
    }

    /** Row order for one epoch, from a seeded shuffle. */
    static int[] permutation(int n, Random rnd) {
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) {
            idx[i] = i;
        }
        for (int i = n - 1; i > 0; i--) {
            int j = rnd.nextInt(i + 1);
            int t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
        return idx;
    }

    /** Something that trains on one mini-batch and returns its loss. */
    private interface BatchStep {
        double step(INDArray x, INDArray oneHot);
    }

    /** Runs {@code epochs} shuffled epochs of {@code step}, with a progress bar when asked; returns seconds taken. */
    private static double train(Config c, Data data, int epochs, String task, long seed, BatchStep step) {
        Random rnd = new Random(seed);
        int batches = (data.size() + c.batch() - 1) / c.batch();
        ProgressBar bar = c.progress()
                ? new ProgressBarBuilder().setTaskName(String.format(Locale.ROOT, "%-17s", task))
                        .setInitialMax((long) epochs * batches).setStyle(ProgressBarStyle.ASCII)
                        .setUpdateIntervalMillis(250).setMaxRenderedLength(100).build()
                : null;
        long t0 = System.nanoTime();
        try {
            for (int e = 0; e < epochs; e++) {
                int[] order = permutation(data.size(), rnd);
                double lossSum = 0;
                for (int b = 0; b < batches; b++) {
                    int from = b * c.batch();
                    int to = Math.min(data.size(), from + c.batch());
                    int[] rows = Arrays.copyOfRange(order, from, to);
                    INDArray xb = Nd4j.pullRows(data.x(), 1, rows);
                    INDArray yb = Nd4j.pullRows(data.oneHot(), 1, rows);
                    lossSum += step.step(xb, yb);
                    if (bar != null) {
                        bar.step();
                    }
                }
                if (bar != null) {
                    bar.setExtraMessage(String.format(Locale.ROOT, "epoch %d loss %.3f", e + 1, lossSum / batches));
                }
            }
        } finally {
            if (bar != null) {
                bar.close();
            }
        }
        return (System.nanoTime() - t0) / 1e9;
    }

    // ---------------------------------------------------------------- the demo

    /** Runs the whole demo with {@code c}, printing progress and the comparison to {@code out}. */
    public static Result run(Config c, PrintStream out) {
        double[][] centres = blobCentres(c);
        Data trainA = sample(c, centres, c.trainA(), c.seed() + 1, false);
        Data trainB = sample(c, centres, c.trainB(), c.seed() + 2, true);
        Data testA = sample(c, centres, c.test(), c.seed() + 3, false);
        Data testB = sample(c, centres, c.test(), c.seed() + 4, true);
        int[] widths = {c.inputDim(), c.hidden(), c.hidden(), c.classes()};
        List<long[]> shapes = new ArrayList<>();
        for (int l = 0; l + 1 < widths.length; l++) {
            shapes.add(new long[] {widths[l], widths[l + 1]});
        }

        // 1. Pre-train on task A with plain arrays (this needs dW, which LoraLinear deliberately never computes).
        Mlp base = new Mlp(widths, c.seed());
        Adam preAdam = new Adam(3e-3);
        int[] it = {0};
        double[] loss = new double[1];
        double preSeconds = train(c, trainA, c.epochsA(), "pre-train A", c.seed() + 10, (x, y) -> {
            INDArray g = crossEntropyGrad(base.forward(x, true), y, loss);
            base.backward(g);
            base.adamStep(preAdam, it[0]++);
            return loss[0];
        });
        double accA = accuracy(base.forward(testA.x(), false), testA.labels());
        out.printf(Locale.ROOT, "Pre-trained %s on task A (%,d examples, %d epochs) in %.1f s: test accuracy on A %.1f %%%n",
                describe(widths), c.trainA(), c.epochsA(), preSeconds, 100 * accA);

        List<Method> methods = new ArrayList<>();
        // 2a. No adaptation.
        methods.add(new Method("no adaptation", 0, accuracy(base.forward(testB.x(), false), testB.labels()), accA,
                0, 0, 0.0));

        // 2b. Full fine-tuning: a copy of every weight and bias, all trained.
        Mlp full = base.copy();
        Adam fullAdam = new Adam(3e-3);
        int[] itFull = {0};
        double fullSeconds = train(c, trainB, c.epochsB(), "full fine-tune B", c.seed() + 20, (x, y) -> {
            INDArray g = crossEntropyGrad(full.forward(x, true), y, loss);
            full.backward(g);
            full.adamStep(fullAdam, itFull[0]++);
            return loss[0];
        });
        methods.add(new Method("full fine-tuning", 0, accuracy(full.forward(testB.x(), false), testB.labels()),
                accuracy(full.forward(testA.x(), false), testA.labels()), full.parameterCount(),
                full.optimizerStateSize(), fullSeconds));

        // 2c. LoRA: wrap the pre-trained arrays (no copy), one adapter per rank on every layer, only A and B trained.
        List<LoraLinear> layers = new ArrayList<>();
        List<INDArray> pretrainedW = new ArrayList<>();
        for (int l = 0; l < base.weights.size(); l++) {
            pretrainedW.add(base.weights.get(l).dup('c'));
            LoraLinear layer = LoraLinear.base(base.weights.get(l), base.biases.get(l), WeightLayout.OUT_IN);
            for (int r : c.ranks()) {
                // alpha = 2r keeps the scaling s = alpha/r = 2 for every rank, so one learning rate fits all.
                layer.addAdapter(adapterName(r), LoraConfig.builder().rank(r).alpha(2.0 * r).seed(c.seed() + 100 * l + r).build());
            }
            layers.add(layer);
        }
        for (int r : c.ranks()) {
            for (LoraLinear layer : layers) {
                layer.setActiveAdapter(adapterName(r));
                layer.train();
            }
            LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(5e-3)).build(layers);
            List<INDArray> reluOutputs = new ArrayList<>();
            double seconds = train(c, trainB, c.epochsB(), "LoRA r=" + r + " B", c.seed() + 30 + r, (x, y) -> {
                reluOutputs.clear();
                INDArray logits = forward(layers, x, reluOutputs);
                backward(layers, reluOutputs, crossEntropyGrad(logits, y, loss));
                trainer.step();
                return loss[0];
            });
            long trainable = layers.stream().mapToLong(LoraLinear::trainableParameterCount).sum();
            layers.forEach(LoraLinear::eval);
            methods.add(new Method("LoRA r=" + r, r, accuracy(forward(layers, testB.x()), testB.labels()),
                    accuracy(forward(layers, testA.x()), testA.labels()), trainable, trainer.updaterStateSize(), seconds));
        }

        // 3. Merge the largest-rank adapter and compare with the unmerged model, then time all three.
        int rMerge = c.ranks().stream().mapToInt(Integer::intValue).max().orElseThrow();
        MergeCheck merge = mergeCheck(layers, pretrainedW, rMerge, testB, c.timingRepeats());

        Result result = new Result(accA, preSeconds, List.copyOf(methods), merge, List.copyOf(shapes));
        print(out, c, result);
        return result;
    }

    static String adapterName(int r) {
        return "r" + r;
    }

    /**
     * Merges adapter {@code r<rank>} on every layer, compares predictions, times the three states, and finally
     * compares every {@code W} bitwise with {@code pretrainedW}, the copies taken before any LoRA training.
     */
    private static MergeCheck mergeCheck(List<LoraLinear> layers, List<INDArray> pretrainedW, int rank, Data test,
                                         int repeats) {
        for (LoraLinear layer : layers) {
            layer.setActiveAdapter(adapterName(rank));
            layer.eval();
        }
        INDArray unmerged = forward(layers, test.x());
        layers.forEach(LoraLinear::merge);
        INDArray merged = forward(layers, test.x());
        layers.forEach(LoraLinear::unmerge);
        // Timing: one pass per state per round, interleaved, and the median per state, so that load from other
        // processes hits all three states alike. This also runs `repeats` more merge/unmerge cycles before W is
        // compared with its copy.
        for (int i = 0; i < 3; i++) {
            forward(layers, test.x()); // warm-up
        }
        double[] unmergedMs = new double[repeats];
        double[] mergedMs = new double[repeats];
        double[] baseMs = new double[repeats];
        for (int i = 0; i < repeats; i++) {
            unmergedMs[i] = time(layers, test.x());
            layers.forEach(LoraLinear::merge);
            mergedMs[i] = time(layers, test.x());
            layers.forEach(LoraLinear::unmerge);
            layers.forEach(LoraLinear::disableAdapters);
            baseMs[i] = time(layers, test.x());
            layers.forEach(LoraLinear::enableAdapters);
        }
        boolean restored = true;
        for (int l = 0; l < layers.size(); l++) {
            // Bitwise, not INDArray.equals (which allows an epsilon).
            restored &= Arrays.equals(layers.get(l).weight().dup('c').data().asFloat(),
                    pretrainedW.get(l).data().asFloat());
        }

        int[] pu = unmerged.argMax(1).toIntVector();
        int[] pm = merged.argMax(1).toIntVector();
        int mismatches = 0;
        for (int i = 0; i < pu.length; i++) {
            mismatches += pu[i] == pm[i] ? 0 : 1;
        }
        double maxDiff = Transforms.abs(merged.sub(unmerged), false).maxNumber().doubleValue();
        return new MergeCheck(rank, pu.length, mismatches, maxDiff, restored, repeats + 1, median(unmergedMs),
                median(mergedMs), median(baseMs));
    }

    /** Milliseconds of one forward of {@code x}. */
    private static double time(List<LoraLinear> layers, INDArray x) {
        long t0 = System.nanoTime();
        forward(layers, x);
        return (System.nanoTime() - t0) / 1e6;
    }

    private static double median(double[] values) {
        double[] v = values.clone();
        Arrays.sort(v);
        int n = v.length;
        return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    }

    private static String describe(int[] widths) {
        StringBuilder sb = new StringBuilder("MLP ");
        for (int i = 0; i < widths.length; i++) {
            sb.append(i == 0 ? "" : "-").append(widths[i]);
        }
        return sb.toString();
    }

    private static void print(PrintStream out, Config c, Result r) {
        out.println();
        out.printf(Locale.ROOT, "Task B: task A with both informative planes rotated by %.0f deg; %,d adaptation examples,"
                + " %d epochs, Adam%n", c.rotationDegrees(), c.trainB(), c.epochsB());
        out.printf(Locale.ROOT, "%-17s %10s %10s %12s %12s %9s%n", "method", "acc B", "acc A", "trainable",
                "Adam state", "time");
        for (Method m : r.methods()) {
            out.printf(Locale.ROOT, "%-17s %9.1f%% %9.1f%% %,12d %,12d %8.2fs%n", m.name(), 100 * m.accuracyB(),
                    100 * m.accuracyA(), m.trainableParameters(), m.optimizerState(), m.seconds());
        }
        out.println("(acc A: the adapted model on task A. LoRA's W is untouched: with adapters off it is the"
                + " pre-trained model, " + String.format(Locale.ROOT, "%.1f %%", 100 * r.accuracyAPretrained()) + " on A.)");
        MergeCheck m = r.merge();
        out.println();
        out.printf(Locale.ROOT, "Merged LoRA r=%d into W: %d of %,d test predictions differ, max |logit difference| %.2e%n",
                m.rank(), m.argmaxMismatches(), m.testPoints(), m.maxAbsLogitDiff());
        out.printf(Locale.ROOT, "W bit for bit the pre-trained W after training %d adapters and %d merge/unmerge cycles: %s%n",
                c.ranks().size(), m.mergeCycles(),
                m.weightsRestored() ? "yes" : "NO");
        out.printf(Locale.ROOT, "Inference over the %,d test rows (median of %d interleaved passes): unmerged %.3f ms,"
                + " merged %.3f ms, base model %.3f ms%n", m.testPoints(), m.mergeCycles() - 1, m.unmergedMillis(),
                m.mergedMillis(), m.baseMillis());
    }

    /**
     * Caps ND4J's native threads (its OpenMP pool and the BLAS pool). The demo's matrices are at most 64 wide, far
     * too small to gain from threads, and on a machine whose cores are busy with other work idle OpenMP threads
     * spinning for their share made it about five times slower here.
     */
    static void limitNativeThreads(int threads) {
        Nd4j.getEnvironment().setMaxThreads(threads);
        Nd4j.getEnvironment().setMaxMasterThreads(threads);
        Nd4j.factory().blas().setMaxThreads(threads);
    }

    /**
     * Entry point: runs {@link Config#defaults()}; {@code --smoke} runs the small configuration, {@code --threads n}
     * lets ND4J use {@code n} native threads (default 1, see {@link #limitNativeThreads}).
     */
    public static void main(String[] args) {
        Config c = Config.defaults();
        int threads = 1;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--smoke" -> c = Config.smoke();
                case "--threads" -> {
                    if (i + 1 >= args.length) {
                        throw new IllegalArgumentException("--threads needs a value, e.g. --threads 2");
                    }
                    threads = Integer.parseInt(args[++i]);
                    if (threads < 1) {
                        throw new IllegalArgumentException("--threads: expected >= 1, got " + threads);
                    }
                }
                default -> throw new IllegalArgumentException("unknown option " + args[i]
                        + "; expected --smoke or --threads <n>");
            }
        }
        limitNativeThreads(threads);
        long t0 = System.nanoTime();
        run(c, System.out);
        System.out.printf(Locale.ROOT, "%nTotal wall time %.1f s%n", (System.nanoTime() - t0) / 1e9);
    }
}
