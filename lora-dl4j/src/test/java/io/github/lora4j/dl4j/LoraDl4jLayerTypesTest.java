package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.LoraConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeSet;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.deeplearning4j.nn.conf.ConvolutionMode;
import org.deeplearning4j.nn.conf.InputPreProcessor;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.ActivationLayer;
import org.deeplearning4j.nn.conf.layers.AutoEncoder;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.CenterLossOutputLayer;
import org.deeplearning4j.nn.conf.layers.Convolution1DLayer;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.Deconvolution2D;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.DepthwiseConvolution2D;
import org.deeplearning4j.nn.conf.layers.DropoutLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingLayer;
import org.deeplearning4j.nn.conf.layers.EmbeddingSequenceLayer;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.GravesBidirectionalLSTM;
import org.deeplearning4j.nn.conf.layers.GravesLSTM;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.LocalResponseNormalization;
import org.deeplearning4j.nn.conf.layers.LocallyConnected2D;
import org.deeplearning4j.nn.conf.layers.LossLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PReLULayer;
import org.deeplearning4j.nn.conf.layers.RecurrentAttentionLayer;
import org.deeplearning4j.nn.conf.layers.RnnLossLayer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.SelfAttentionLayer;
import org.deeplearning4j.nn.conf.layers.SeparableConvolution2D;
import org.deeplearning4j.nn.conf.layers.Subsampling1DLayer;
import org.deeplearning4j.nn.conf.layers.SubsamplingLayer;
import org.deeplearning4j.nn.conf.layers.Upsampling2D;
import org.deeplearning4j.nn.conf.layers.ZeroPaddingLayer;
import org.deeplearning4j.nn.conf.layers.convolutional.Cropping2D;
import org.deeplearning4j.nn.conf.layers.misc.ElementWiseMultiplicationLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.conf.layers.recurrent.Bidirectional;
import org.deeplearning4j.nn.conf.layers.recurrent.LastTimeStep;
import org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
import org.deeplearning4j.nn.conf.layers.util.MaskZeroLayer;
import org.deeplearning4j.nn.conf.layers.variational.VariationalAutoencoder;
import org.deeplearning4j.nn.conf.preprocessor.FeedForwardToCnnPreProcessor;
import org.deeplearning4j.nn.conf.preprocessor.FeedForwardToRnnPreProcessor;
import org.deeplearning4j.nn.conf.preprocessor.RnnToFeedForwardPreProcessor;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * Issue 30 item 6: which DL4J layer types carry LoRA, pass through a LoRA network (frozen, or unchanged without
 * parameters) or are refused, one row per type. Every row builds a small network around the layer, applies LoRA to
 * the dense layer below it and the output layer (the layer itself untargeted), then targets the layer itself. A layer
 * that passes must give the base network's output bit for bit, keep every parameter bitwise unchanged through
 * {@code fit()} with Adam, L2 and weight decay configured on every layer, and pass gradients down to the adapter below
 * it; a refusal must name the layer and why, and leave the network as it was. docs/dl4j.md's table must say the same.
 */
class LoraDl4jLayerTypesTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();
    private static final int N = 8;
    private static final int T = 5;

    /** What {@code apply} does with a layer type when it is targeted. */
    enum Targeted { CARRIES_LORA, REFUSED }

    /** What {@code apply} does with a layer type that is not targeted. */
    enum Untargeted { FROZEN, UNCHANGED, REFUSED }

    /** Where the layer sits: which input the network takes and what comes after it. */
    enum Kind {
        /** dense(target) → X → output(target), feed-forward [n, 6]. */
        FF,
        /** dense(target) → X as the output layer, feed-forward. */
        FF_OUT,
        /** X (ids [n, 1]) → dense(target) → output(target). */
        EMBED,
        /** X (ids [n, T]) → dense(target, per time step) → RnnOutputLayer(target). */
        EMBED_SEQ,
        /** dense(target, per time step) → X → RnnOutputLayer(target), input [n, 6, T]. */
        RNN,
        /** dense(target, per time step) → X (to [n, size]) → OutputLayer(target). */
        RNN_LAST,
        /** dense(target, per time step) → X as the output layer. */
        RNN_OUT,
        /** dense(target) → [n, 2, 6, 6] → X → output(target), input [n, 72]. */
        CNN
    }

    record Case(String type, Kind kind, Supplier<Layer> layer, Targeted targeted, Untargeted untargeted) {
        @Override
        public String toString() {
            return type + " (" + kind + ")";
        }
    }

    static Stream<Case> cases() {
        List<Case> c = new ArrayList<>();
        Targeted lora = Targeted.CARRIES_LORA;
        Targeted no = Targeted.REFUSED;
        Untargeted frozen = Untargeted.FROZEN;
        Untargeted same = Untargeted.UNCHANGED;
        c.add(new Case("DenseLayer", Kind.FF, () -> new DenseLayer.Builder().nOut(6).activation(Activation.TANH).build(),
                lora, frozen));
        c.add(new Case("DenseLayer", Kind.RNN, () -> new DenseLayer.Builder().nOut(6).activation(Activation.TANH).build(),
                lora, frozen));
        c.add(new Case("OutputLayer", Kind.FF_OUT, () -> new OutputLayer.Builder(LossFunction.MCXENT).nOut(3)
                .activation(Activation.SOFTMAX).build(), lora, frozen));
        c.add(new Case("RnnOutputLayer", Kind.RNN_OUT, () -> new RnnOutputLayer.Builder(LossFunction.MCXENT).nOut(3)
                .activation(Activation.SOFTMAX).build(), lora, frozen));
        c.add(new Case("DenseLayer with layer norm", Kind.FF, () -> new DenseLayer.Builder().nOut(6).hasLayerNorm(true)
                .build(), no, frozen));
        c.add(new Case("BatchNormalization", Kind.FF, () -> new BatchNormalization.Builder().build(), no, frozen));
        c.add(new Case("BatchNormalization", Kind.CNN, () -> new BatchNormalization.Builder().build(), no, frozen));
        c.add(new Case("ActivationLayer", Kind.FF, () -> new ActivationLayer.Builder().activation(Activation.RELU)
                .build(), no, same));
        c.add(new Case("DropoutLayer", Kind.FF, () -> new DropoutLayer.Builder(0.5).build(), no, same));
        c.add(new Case("PReLULayer", Kind.FF, () -> new PReLULayer.Builder().inputShape(6).build(), no, frozen));
        c.add(new Case("ElementWiseMultiplicationLayer", Kind.FF, () -> new ElementWiseMultiplicationLayer.Builder()
                .nOut(6).build(), no, frozen));
        c.add(new Case("AutoEncoder", Kind.FF, () -> new AutoEncoder.Builder().nOut(5).build(), no,
                Untargeted.REFUSED));
        c.add(new Case("VariationalAutoencoder", Kind.FF, () -> new VariationalAutoencoder.Builder()
                .encoderLayerSizes(5).decoderLayerSizes(5).nOut(4).build(), no, Untargeted.REFUSED));
        c.add(new Case("CenterLossOutputLayer", Kind.FF_OUT, () -> new CenterLossOutputLayer.Builder()
                .lossFunction(LossFunction.MCXENT).nOut(3).activation(Activation.SOFTMAX).build(), no,
                Untargeted.REFUSED));
        c.add(new Case("LossLayer", Kind.FF_OUT, () -> new LossLayer.Builder(LossFunction.MSE)
                .activation(Activation.IDENTITY).build(), no, same));
        c.add(new Case("EmbeddingLayer", Kind.EMBED, () -> new EmbeddingLayer.Builder().nIn(10).nOut(6).build(), no,
                frozen));
        c.add(new Case("EmbeddingSequenceLayer", Kind.EMBED_SEQ, () -> new EmbeddingSequenceLayer.Builder().nIn(10)
                .nOut(6).inputLength(T).build(), no, frozen));
        c.add(new Case("LSTM", Kind.RNN, () -> new LSTM.Builder().nOut(6).build(), no, frozen));
        c.add(new Case("GravesLSTM", Kind.RNN, () -> new GravesLSTM.Builder().nOut(6).build(), no, frozen));
        c.add(new Case("GravesBidirectionalLSTM", Kind.RNN, () -> new GravesBidirectionalLSTM.Builder().nOut(6).build(),
                no, frozen));
        c.add(new Case("SimpleRnn", Kind.RNN, () -> new SimpleRnn.Builder().nOut(6).build(), no, frozen));
        c.add(new Case("Bidirectional", Kind.RNN, () -> new Bidirectional(new LSTM.Builder().nOut(3).build()), no,
                frozen));
        c.add(new Case("LastTimeStep", Kind.RNN_LAST, () -> new LastTimeStep(new LSTM.Builder().nOut(6).build()), no, frozen));
        c.add(new Case("MaskZeroLayer", Kind.RNN, () -> new MaskZeroLayer(new LSTM.Builder().nOut(6).build(), 0.0), no,
                frozen));
        c.add(new Case("SelfAttentionLayer", Kind.RNN, () -> new SelfAttentionLayer.Builder().nOut(6).nHeads(2)
                .headSize(3).projectInput(true).build(), no, frozen));
        c.add(new Case("RecurrentAttentionLayer", Kind.RNN, () -> new RecurrentAttentionLayer.Builder().nOut(6)
                .nHeads(2).headSize(3).projectInput(true).build(), no, frozen));
        c.add(new Case("Convolution1DLayer", Kind.RNN, () -> new Convolution1DLayer.Builder().kernelSize(2).nOut(6)
                .convolutionMode(ConvolutionMode.Same).build(), no, frozen));
        c.add(new Case("Subsampling1DLayer", Kind.RNN, () -> new Subsampling1DLayer.Builder().kernelSize(2).stride(1)
                .build(), no, same));
        c.add(new Case("GlobalPoolingLayer", Kind.RNN_LAST, () -> new GlobalPoolingLayer.Builder().build(), no, same));
        c.add(new Case("RnnLossLayer", Kind.RNN_OUT, () -> new RnnLossLayer.Builder(LossFunction.MSE)
                .activation(Activation.IDENTITY).build(), no, same));
        c.add(new Case("ConvolutionLayer", Kind.CNN, () -> new ConvolutionLayer.Builder(3, 3).nOut(2)
                .convolutionMode(ConvolutionMode.Same).build(), no, frozen));
        c.add(new Case("Deconvolution2D", Kind.CNN, () -> new Deconvolution2D.Builder(2, 2).nOut(2).build(), no,
                frozen));
        c.add(new Case("DepthwiseConvolution2D", Kind.CNN, () -> new DepthwiseConvolution2D.Builder(2, 2)
                .depthMultiplier(1).nOut(2).convolutionMode(ConvolutionMode.Truncate).build(), no, frozen));
        c.add(new Case("SeparableConvolution2D", Kind.CNN, () -> new SeparableConvolution2D.Builder(2, 2).nOut(2)
                .convolutionMode(ConvolutionMode.Truncate).build(), no, frozen));
        c.add(new Case("LocallyConnected2D", Kind.CNN, () -> new LocallyConnected2D.Builder().kernelSize(3, 3)
                .nOut(2).build(), no, frozen));
        c.add(new Case("SubsamplingLayer", Kind.CNN, () -> new SubsamplingLayer.Builder(2, 2)
                .convolutionMode(ConvolutionMode.Truncate).build(), no, same));
        c.add(new Case("ZeroPaddingLayer", Kind.CNN, () -> new ZeroPaddingLayer.Builder(1, 1).build(), no, same));
        c.add(new Case("Upsampling2D", Kind.CNN, () -> new Upsampling2D.Builder(2).build(), no, same));
        c.add(new Case("Cropping2D", Kind.CNN, () -> new Cropping2D(1, 1), no, same));
        c.add(new Case("LocalResponseNormalization", Kind.CNN, () -> new LocalResponseNormalization.Builder().n(1)
                .build(),
                no, same));
        return c.stream();
    }

    // ---------------------------------------------------------------- networks around the layer

    /** The network of {@code c}, X named "x", the other layers "below", "above", "out"; initialised. */
    static MultiLayerNetwork network(Case c) {
        Layer x = c.layer().get();
        x.setLayerName("x");
        NeuralNetConfiguration.ListBuilder b = new NeuralNetConfiguration.Builder().seed(12).dataType(DataType.DOUBLE)
                .updater(new Adam(0.05)).l2(1e-3).weightDecay(1e-2).convolutionMode(ConvolutionMode.Truncate).list();
        switch (c.kind()) {
            case FF -> b.layer(dense("below")).layer(x).layer(output("out"))
                    .setInputType(InputType.feedForward(6));
            case FF_OUT -> b.layer(new DenseLayer.Builder().name("below").nOut(3).activation(Activation.TANH).build())
                    .layer(x).setInputType(InputType.feedForward(6));
            case EMBED -> b.layer(x).layer(dense("above", 6)).layer(output("out", 6));
            case EMBED_SEQ -> b.layer(x).layer(dense("above", 6)).layer(rnnOutput("out", 6))
                    .inputPreProcessor(1, new RnnToFeedForwardPreProcessor())
                    .inputPreProcessor(2, new FeedForwardToRnnPreProcessor());
            case RNN -> b.layer(dense("below")).layer(x).layer(rnnOutput("out"))
                    .setInputType(InputType.recurrent(6, T));
            case RNN_LAST -> b.layer(dense("below")).layer(x).layer(output("out"))
                    .setInputType(InputType.recurrent(6, T));
            case RNN_OUT -> b.layer(new DenseLayer.Builder().name("below").nOut(3).activation(Activation.TANH).build())
                    .layer(x).setInputType(InputType.recurrent(6, T));
            case CNN -> {
                InputType image = InputType.convolutional(6, 6, 2);
                if (x instanceof FeedForwardLayer) {
                    ((FeedForwardLayer) x).setNIn(image, false);
                }
                InputType after = x.getOutputType(1, image);
                OutputLayer out = output("out");
                InputPreProcessor flatten = out.getPreProcessorForInputType(after);
                out.setNIn(after.arrayElementsPerExample());
                b.layer(new DenseLayer.Builder().name("below").nIn(72).nOut(72).activation(Activation.TANH).build())
                        .layer(x).layer(out)
                        .inputPreProcessor(1, new FeedForwardToCnnPreProcessor(6, 6, 2));
                if (flatten != null) {
                    b.inputPreProcessor(2, flatten);
                }
            }
            default -> throw new IllegalStateException(c.kind().toString());
        }
        MultiLayerNetwork net = new MultiLayerNetwork(b.build());
        net.init();
        return net;
    }

    private static DenseLayer dense(String name) {
        return new DenseLayer.Builder().name(name).nOut(6).activation(Activation.TANH).build();
    }

    private static DenseLayer dense(String name, int nIn) {
        return new DenseLayer.Builder().name(name).nIn(nIn).nOut(6).activation(Activation.TANH).build();
    }

    private static OutputLayer output(String name) {
        return new OutputLayer.Builder(LossFunction.MCXENT).name(name).nOut(3).activation(Activation.SOFTMAX).build();
    }

    private static OutputLayer output(String name, int nIn) {
        OutputLayer out = output(name);
        out.setNIn(nIn);
        return out;
    }

    private static RnnOutputLayer rnnOutput(String name) {
        return new RnnOutputLayer.Builder(LossFunction.MCXENT).name(name).nOut(3).activation(Activation.SOFTMAX).build();
    }

    private static RnnOutputLayer rnnOutput(String name, int nIn) {
        RnnOutputLayer out = rnnOutput(name);
        out.setNIn(nIn);
        return out;
    }

    /** Features of the network's input kind and one-hot labels of its output's shape. */
    static DataSet data(MultiLayerNetwork net, Case c, long seed) {
        Random r = new Random(seed);
        INDArray features = switch (c.kind()) {
            case EMBED -> Nd4j.createFromArray(ints(r, N, 1)).castTo(DataType.DOUBLE);
            case EMBED_SEQ -> Nd4j.createFromArray(ints(r, N, T)).castTo(DataType.DOUBLE);
            case RNN, RNN_LAST, RNN_OUT -> Nets.gaussian(seed, N, 6 * T).reshape('c', N, 6, T);
            case CNN -> Nets.gaussian(seed, N, 72);
            default -> Nets.gaussian(seed, N, 6);
        };
        INDArray out = net.output(features);
        INDArray labels = Nd4j.zeros(DataType.DOUBLE, out.shape());
        long classes = out.size(1);
        long steps = out.rank() == 3 ? out.size(2) : 1;
        for (int i = 0; i < N; i++) {
            for (int t = 0; t < steps; t++) {
                int k = r.nextInt((int) classes);
                if (out.rank() == 3) {
                    labels.putScalar(new int[] {i, k, t}, 1.0);
                } else {
                    labels.putScalar(i, k, 1.0);
                }
            }
        }
        return new DataSet(features, labels);
    }

    private static int[][] ints(Random r, int rows, int cols) {
        int[][] v = new int[rows][cols];
        for (int[] row : v) {
            for (int j = 0; j < cols; j++) {
                row[j] = r.nextInt(10);
            }
        }
        return v;
    }

    /** The LoRA targets besides X: the adapted dense layer and the output layer, where the network has them. */
    private static String[] others(Case c) {
        return switch (c.kind()) {
            case FF, RNN, RNN_LAST, CNN -> new String[] {"below", "out"};
            case FF_OUT, RNN_OUT -> new String[] {"below"};
            case EMBED, EMBED_SEQ -> new String[] {"above", "out"};
        };
    }

    // ---------------------------------------------------------------- the table

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void anUntargetedLayerPassesFrozenOrUnchangedOrIsRefusedByName(Case c) {
        MultiLayerNetwork base = network(c);
        DataSet data = data(base, c, 3);
        INDArray baseParams = base.params().dup();
        if (c.untargeted() == Untargeted.REFUSED) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LoraDl4j.apply(base, CONFIG, others(c)), c.toString());
            assertTrue(e.getMessage().contains("'x'") && e.getMessage().contains("cannot freeze"), e.getMessage());
            assertBitwise(baseParams, base.params(), "parameters after a refused apply");
            return;
        }
        MultiLayerNetwork lora = LoraDl4j.apply(base, CONFIG, others(c));
        Layer x = lora.getLayerWiseConfigurations().getConf(index(lora, "x")).getLayer();
        if (c.untargeted() == Untargeted.UNCHANGED) {
            assertEquals(base.getLayerWiseConfigurations().getConf(index(base, "x")).getLayer(), x,
                    c + ": the layer without parameters is kept as it is");
        } else {
            assertTrue(x instanceof FrozenLayerWithBackprop || x instanceof FrozenBatchNormalization
                    || (x instanceof LoraLayerConf && ((LoraLayerConf) x).lora() == null), c + ": frozen, got " + x);
        }
        assertBitwise(base.output(data.getFeatures()), lora.output(data.getFeatures()), c + ": output at init");

        Map<String, INDArray> before = LoraDl4jTest.params(lora);
        for (int i = 0; i < 3; i++) {
            lora.fit(data);
        }
        Map<String, INDArray> after = LoraDl4jTest.params(lora);
        int trained = 0;
        for (Map.Entry<String, INDArray> e : before.entrySet()) {
            if (e.getKey().endsWith("_loraA") || e.getKey().endsWith("_loraB")) {
                trained++;
            } else {
                assertBitwise(e.getValue(), after.get(e.getKey()), c + ": frozen parameter " + e.getKey()
                        + " after fit() with Adam, L2 and weight decay");
            }
        }
        assertEquals(2 * others(c).length, trained, "loraA/loraB of " + List.of(others(c)));
        for (String target : others(c)) {
            INDArray loraB = lora.getLayer(index(lora, target)).getParam("loraB");
            assertNotEquals(0.0, loraB.amaxNumber().doubleValue(), c + ": the adapter of '" + target
                    + "' trains, so the gradient passed through the layer above it");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void aTargetedLayerCarriesLoraOrIsRefusedByNameAndReason(Case c) {
        MultiLayerNetwork base = network(c);
        INDArray baseParams = base.params().dup();
        if (c.targeted() == Targeted.CARRIES_LORA) {
            MultiLayerNetwork lora = LoraDl4j.apply(base, CONFIG, "x");
            Layer x = lora.getLayerWiseConfigurations().getConf(index(lora, "x")).getLayer();
            assertInstanceOf(LoraLayerConf.class, x, c.toString());
            assertNotNull(((LoraLayerConf) x).lora(), c + ": with an adapter");
            DataSet data = data(base, c, 4);
            assertBitwise(base.output(data.getFeatures()), lora.output(data.getFeatures()), c + ": output at init");
            return;
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.apply(base, CONFIG, "x"), c.toString());
        assertTrue(e.getMessage().contains("'x'"), e.getMessage());
        assertTrue(e.getMessage().contains("expected a DenseLayer, OutputLayer or RnnOutputLayer")
                || e.getMessage().contains("expected a plain DenseLayer, OutputLayer or RnnOutputLayer"), e.getMessage());
        assertBitwise(baseParams, base.params(), "parameters after a refused apply");
    }

    static int index(MultiLayerNetwork net, String name) {
        for (int i = 0; i < net.getnLayers(); i++) {
            if (name.equals(net.getLayerWiseConfigurations().getConf(i).getLayer().getLayerName())) {
                return i;
            }
        }
        return fail("no layer " + name);
    }

    // ---------------------------------------------------------------- the guide says the same

    /** A row of docs/dl4j.md's table: | `Type` | targeted | untargeted |. */
    private static final Pattern ROW = Pattern.compile("^\\| `([A-Za-z0-9]+)`( with layer norm)? \\| ([^|]+)\\| ([^|]+)\\|");

    @Test
    void theGuidesTableOfLayerTypesMatchesTheCode() throws IOException {
        Path guide = Path.of("..", "docs", "dl4j.md");
        Map<String, String[]> documented = new LinkedHashMap<>();
        for (String line : Files.readAllLines(guide)) {
            Matcher m = ROW.matcher(line);
            if (m.find()) {
                documented.put(m.group(1) + (m.group(2) == null ? "" : m.group(2)),
                        new String[] {m.group(3).trim(), m.group(4).trim()});
            }
        }
        TreeSet<String> missing = new TreeSet<>();
        cases().forEach(c -> {
            String[] row = documented.get(c.type());
            if (row == null) {
                missing.add(c.type());
                return;
            }
            String targeted = c.targeted() == Targeted.CARRIES_LORA ? "carries LoRA" : "refused";
            String untargeted = c.untargeted().name().toLowerCase(java.util.Locale.ROOT);
            assertTrue(row[0].startsWith(targeted), c.type() + ": the guide says targeted '" + row[0] + "', the code: "
                    + targeted);
            assertTrue(row[1].startsWith(untargeted), c.type() + ": the guide says untargeted '" + row[1]
                    + "', the code: " + untargeted);
        });
        assertTrue(missing.isEmpty(), "layer types tested here but missing from docs/dl4j.md's table: " + missing);
    }

    /** The assertion that frozen layers keep their parameters is only as good as the updater settings used: check them. */
    @Test
    void everyLayerOfTheTestNetworksHasL2AndWeightDecay() {
        MultiLayerNetwork net = network(cases().filter(c -> c.type().equals("LSTM")).findFirst().orElseThrow());
        BaseLayer lstm = (BaseLayer) net.getLayerWiseConfigurations().getConf(1).getLayer();
        assertEquals(2, lstm.getRegularization().size(), "L2 and weight decay: " + lstm.getRegularization());
    }
}
