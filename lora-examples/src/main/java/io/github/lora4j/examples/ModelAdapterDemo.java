package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.Adam;

/**
 * A model from named layers, adapted the PEFT way: build a two-block toy transformer whose modules carry
 * Hugging Face-style paths ({@code model.layers.0.self_attn.q_proj}, ..., {@code model.layers.1.mlp.fc}), print
 * the parameter report, put LoRA on {@code q_proj} and {@code v_proj} only, train the adapters to imitate a
 * "fine-tuned" teacher, save the adapter as PEFT files, load it into a fresh model built from the same base weights
 * and check that both give identical outputs, bit for bit.
 *
 * <p>Each block is deliberately simple, so its backward pass fits on a screen and is obviously right:
 * {@code t = q(h) + k(h) + v(h)}, {@code h += o(t)}, {@code h += proj(relu(fc(h)))}. (No softmax attention: the
 * point is routing gradients through named LoRA and frozen layers, not a real transformer.) The MLP's {@code fc}
 * stores its weight {@code [in, out]} as DL4J's DenseLayer does (PEFT's {@code fan_in_fan_out}).
 *
 * <p>Run: {@code mvn -B -q -Pexample -DskipTests -pl lora-examples -am package -Dexample=io.github.lora4j.examples.ModelAdapterDemo}
 */
public final class ModelAdapterDemo {

    static final int DIM = 32;
    static final int HIDDEN = 64;
    static final int BLOCKS = 2;
    static final int BATCH = 64;
    static final List<String> TARGETS = List.of("q_proj", "v_proj");

    private ModelAdapterDemo() {
    }

    /**
     * What the demo found.
     *
     * @param reportBefore       PEFT-style parameter line before LoRA is applied (nothing trainable)
     * @param report             the line after applying LoRA to {@link #TARGETS}
     * @param targetedModules    module paths that received adapters
     * @param initialLoss        MSE against the teacher before training
     * @param finalLoss          MSE after training
     * @param maxAbsDiffReloaded largest |difference| between the trained and the reloaded model's outputs
     * @param identicalReloaded  whether those outputs are bitwise identical
     * @param baseWeightsUnchanged whether every base weight of the trained model kept its bits through training
     * @param adapterFileBytes   size of {@code adapter_model.safetensors}
     * @param configFileBytes    size of {@code adapter_config.json}
     * @param baseWeightBytes    float32 bytes of all base weights and biases
     */
    public record Result(String reportBefore, String report, List<String> targetedModules, double initialLoss,
                         double finalLoss, double maxAbsDiffReloaded, boolean identicalReloaded,
                         boolean baseWeightsUnchanged, long adapterFileBytes, long configFileBytes,
                         long baseWeightBytes) {
    }

    /** Runs the demo: {@code steps} Adam steps, the adapter saved under {@code dir}; no progress bar. */
    public static Result run(Path dir, int steps) throws IOException {
        return run(dir, steps, false);
    }

    /** Runs the demo: {@code steps} Adam steps, the adapter saved under {@code dir}, with a progress bar if asked. */
    public static Result run(Path dir, int steps, boolean progress) throws IOException {
        Map<String, INDArray> base = baseWeights(7);
        Map<String, INDArray> baseCopy = new LinkedHashMap<>();
        base.forEach((k, v) -> baseCopy.put(k, v.dup()));

        // The "fine-tuned" teacher: the same model with a low-rank change in every q_proj and v_proj.
        Map<String, INDArray> teacherWeights = new LinkedHashMap<>();
        long seed = 1000;
        for (Map.Entry<String, INDArray> e : base.entrySet()) {
            INDArray w = e.getValue().dup();
            if (LoraModelPaths.isWeight(e.getKey()) && (e.getKey().contains("q_proj") || e.getKey().contains("v_proj"))) {
                w.addi(gaussian(seed++, 0.25, DIM, 2).mmul(gaussian(seed++, 0.25, 2, DIM)));
            }
            teacherWeights.put(e.getKey(), w);
        }
        LoraModel teacher = build(teacherWeights);
        INDArray x = gaussian(99, 1.0, BATCH, DIM);
        INDArray target = new ToyTransformer(teacher).forward(x);

        LoraModel model = build(base);
        String reportBefore = model.trainableParametersReport();
        model.applyLora(LoraConfig.builder().rank(4).alpha(8).seed(3).build(), TARGETS);
        String report = model.trainableParametersReport();

        // One Adam updater (ND4J's own) per adapter of each targeted module, over A and B; state in flat arrays.
        List<Step> optimiser = new java.util.ArrayList<>();
        for (LoraLinear m : model.loraModules().values()) {
            optimiser.add(new Step(m, 0.01));
        }

        ToyTransformer net = new ToyTransformer(model);
        model.train();
        double initialLoss = Double.NaN;
        ProgressBar bar = progress ? new ProgressBarBuilder().setTaskName("Adam steps").setInitialMax(steps)
                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(250).setMaxRenderedLength(100).build() : null;
        for (int step = 0; step < steps; step++) {
            model.zeroGrad();
            INDArray y = net.forward(x);
            INDArray diff = y.sub(target);
            double loss = diff.mul(diff).meanNumber().doubleValue();
            if (step == 0) {
                initialLoss = loss;
            }
            net.backward(diff.muli(2.0 / diff.length()));                 // dL/dy of the mean squared error
            for (Step s : optimiser) {
                s.apply(step);
            }
            if (bar != null) {
                bar.step();
                bar.setExtraMessage(String.format(java.util.Locale.ROOT, "MSE %.5f", loss));
            }
        }
        if (bar != null) {
            bar.close();
        }
        model.eval();
        double finalLoss = mse(net.forward(x), target);

        boolean unchanged = true;
        for (Map.Entry<String, INDArray> e : base.entrySet()) {
            unchanged &= java.util.Arrays.equals(bitsOf(e.getValue()), bitsOf(baseCopy.get(e.getKey())));
        }

        model.save(dir, "default");

        // A fresh model from the same base weights (fresh copies, so nothing is shared with the trained one).
        Map<String, INDArray> freshWeights = new LinkedHashMap<>();
        baseCopy.forEach((k, v) -> freshWeights.put(k, v.dup()));
        LoraModel fresh = build(freshWeights);
        fresh.load(dir, "default");
        INDArray probe = gaussian(123, 1.0, 16, DIM);
        INDArray yTrained = net.forward(probe);
        INDArray yFresh = new ToyTransformer(fresh).forward(probe);
        double maxDiff = yTrained.sub(yFresh).amaxNumber().doubleValue();
        boolean identical = java.util.Arrays.equals(bitsOf(yTrained), bitsOf(yFresh));

        long baseBytes = 0;
        for (INDArray w : base.values()) {
            baseBytes += 4L * w.length();
        }
        return new Result(reportBefore, report, List.copyOf(model.loraModules().keySet()), initialLoss, finalLoss,
                maxDiff, identical, unchanged, Files.size(dir.resolve(PeftAdapterFiles.MODEL_FILE)),
                Files.size(dir.resolve(PeftAdapterFiles.CONFIG_FILE)), baseBytes);
    }

    /** Prints the demo's findings; the adapter goes to {@code lora-examples/target/examples/model-adapter/}. */
    public static void main(String[] args) throws IOException {
        Path dir = Files.createDirectories(ExampleOutput.file("model-adapter"));
        // 32-wide matrices gain nothing from threads; idle native threads spinning for busy cores only slow it down.
        FineTuneDemo.limitNativeThreads(1);
        Result r = run(dir, 300, true);
        System.out.println("Model: " + BLOCKS + " blocks of q/k/v/o_proj [" + DIM + "×" + DIM + "] and an MLP "
                + DIM + "→" + HIDDEN + "→" + DIM);
        System.out.println("before LoRA:  " + r.reportBefore());
        System.out.println("LoRA on " + TARGETS + ": " + r.report());
        System.out.println("targeted modules: " + r.targetedModules());
        System.out.printf("MSE to the fine-tuned teacher: %.6f -> %.6f (%d Adam steps)%n", r.initialLoss(),
                r.finalLoss(), 300);
        System.out.println("base weights unchanged by training: " + r.baseWeightsUnchanged());
        System.out.println("adapter saved to " + dir + ": " + PeftAdapterFiles.MODEL_FILE + " " + r.adapterFileBytes()
                + " B, " + PeftAdapterFiles.CONFIG_FILE + " " + r.configFileBytes() + " B; base weights "
                + r.baseWeightBytes() + " B (" + String.format("%.1f", 100.0 * r.adapterFileBytes() / r.baseWeightBytes())
                + " %)");
        System.out.println("fresh model + loaded adapter: outputs bitwise identical = " + r.identicalReloaded()
                + " (max |diff| " + r.maxAbsDiffReloaded() + ")");
    }

    // ---------------------------------------------------------------- the toy model

    /** Path of every weight, then its bias under {@code <path>.bias}; weights of {@code mlp.fc} are {@code [in, out]}. */
    static Map<String, INDArray> baseWeights(long seed) {
        Map<String, INDArray> w = new LinkedHashMap<>();
        long s = seed;
        for (int layer = 0; layer < BLOCKS; layer++) {
            String p = "model.layers." + layer + ".";
            for (String proj : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                w.put(p + "self_attn." + proj, gaussian(s++, 0.5 / Math.sqrt(DIM), DIM, DIM));
            }
            w.put(p + "mlp.fc", gaussian(s++, 1 / Math.sqrt(DIM), DIM, HIDDEN));
            w.put(p + "mlp.fc.bias", gaussian(s++, 0.1, HIDDEN));
            w.put(p + "mlp.proj", gaussian(s++, 0.5 / Math.sqrt(HIDDEN), DIM, HIDDEN));
            w.put(p + "mlp.proj.bias", gaussian(s++, 0.1, DIM));
        }
        return w;
    }

    static LoraModel build(Map<String, INDArray> w) {
        LoraModel.Builder b = LoraModel.builder();
        for (Map.Entry<String, INDArray> e : w.entrySet()) {
            String path = e.getKey();
            if (!LoraModelPaths.isWeight(path)) {
                continue;
            }
            INDArray bias = w.get(path + ".bias");
            if (path.endsWith("mlp.fc")) {
                b.linearInOut(path, e.getValue(), bias);
            } else {
                b.linear(path, e.getValue(), bias);
            }
        }
        return b.build();
    }

    /** Names in the weight map: a module's weight, or its bias. */
    static final class LoraModelPaths {
        static boolean isWeight(String key) {
            return !key.endsWith(".bias");
        }
    }

    /** Adam on one module's active adapter: A and B updated in place under the layer's lock. */
    static final class Step {
        private final LoraLinear module;
        private final GradientUpdater<?> forA;
        private final GradientUpdater<?> forB;

        Step(LoraLinear module, double learningRate) {
            this.module = module;
            this.forA = adam(learningRate, module.loraA("default").length());
            this.forB = adam(learningRate, module.loraB("default").length());
        }

        private static GradientUpdater<?> adam(double lr, long n) {
            Adam adam = new Adam(lr);
            return adam.instantiate(Nd4j.zeros(DataType.FLOAT, 1, adam.stateSize(n)), true);
        }

        void apply(int iteration) {
            module.updateTrainable(adapter -> {
                forA.applyUpdater(adapter.gradA(), iteration, 0);   // the gradient becomes the step, in place
                forB.applyUpdater(adapter.gradB(), iteration, 0);
                adapter.a().subi(adapter.gradA());
                adapter.b().subi(adapter.gradB());
            });
        }
    }

    /** Forward and backward of the toy blocks through the model's named modules (one thread). */
    static final class ToyTransformer {
        private final LoraModel m;
        /** Pre-activations of each block's fc, kept for relu's backward. */
        private final INDArray[] fcOut = new INDArray[BLOCKS];

        ToyTransformer(LoraModel m) {
            this.m = m;
        }

        INDArray forward(INDArray x) {
            INDArray h = x;
            for (int layer = 0; layer < BLOCKS; layer++) {
                String p = "model.layers." + layer + ".";
                INDArray t = m.forward(p + "self_attn.q_proj", h)
                        .addi(m.forward(p + "self_attn.k_proj", h))
                        .addi(m.forward(p + "self_attn.v_proj", h));
                h = h.add(m.forward(p + "self_attn.o_proj", t));
                fcOut[layer] = m.forward(p + "mlp.fc", h);
                INDArray r = fcOut[layer].mul(fcOut[layer].gt(0).castTo(h.dataType()));   // relu
                h = h.add(m.forward(p + "mlp.proj", r));
            }
            return h;
        }

        /** Back-propagates {@code dL/dy} of the last training-mode forward; adapter gradients accumulate. */
        void backward(INDArray gradOut) {
            INDArray g = gradOut;
            for (int layer = BLOCKS - 1; layer >= 0; layer--) {
                String p = "model.layers." + layer + ".";
                // h2 = h1 + proj(relu(fc(h1)))
                INDArray gr = m.module(p + "mlp.proj").backward(g);
                INDArray gf = gr.muli(fcOut[layer].gt(0).castTo(gr.dataType()));
                g = g.add(m.module(p + "mlp.fc").backward(gf));
                // h1 = h + o(q(h) + k(h) + v(h))
                INDArray gt = m.module(p + "self_attn.o_proj").backward(g);
                g = g.add(m.module(p + "self_attn.q_proj").backward(gt))
                        .addi(m.module(p + "self_attn.k_proj").backward(gt))
                        .addi(m.module(p + "self_attn.v_proj").backward(gt));
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    private static double mse(INDArray y, INDArray target) {
        INDArray d = y.sub(target);
        return d.mul(d).meanNumber().doubleValue();
    }

    private static int[] bitsOf(INDArray a) {
        float[] v = a.dup('c').data().asFloat();
        int[] bits = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            bits[i] = Float.floatToRawIntBits(v[i]);
        }
        return bits;
    }

    static INDArray gaussian(long seed, double scale, long... shape) {
        SplittableRandom rng = new SplittableRandom(seed);
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (rng.nextGaussian() * scale);
        }
        return Nd4j.createFromArray(v).reshape('c', shape);
    }
}
