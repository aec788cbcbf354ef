package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Refusals name what was expected and what came, and leave the given network as it was. */
class LoraDl4jBadInputTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    private static <T extends Throwable> void assertRefused(Class<T> type, MultiLayerNetwork net, Executable call,
            String... fragments) {
        INDArray before = net.params().dup();
        T e = assertThrows(type, call);
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message should contain '" + f + "': " + e.getMessage());
        }
        assertBitwise(before, net.params(), "parameters after a refused call");
    }

    @Test
    void aTargetNamingNoLayerIsRefusedListingTheLayers() {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "layer0", "q_proj"),
                "'q_proj' names no layer", "'layer0' (index 0)", "'layer2' (index 2)");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, "7"), "'7' names no layer");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG, Pattern.compile("fc.*")),
                "'fc.*' matches no layer");
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.apply(net, CONFIG), "at least one target");
    }

    @Test
    void layersWithoutALinearWeightAreRefused() {
        MultiLayerConfiguration conv = new NeuralNetConfiguration.Builder().seed(1).list()
                .layer(new ConvolutionLayer.Builder(3, 3).nOut(4).name("conv").build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(3)
                        .activation(Activation.SOFTMAX).build())
                .setInputType(InputType.convolutional(8, 8, 1)).build();
        MultiLayerNetwork convNet = new MultiLayerNetwork(conv);
        convNet.init();
        assertRefused(IllegalArgumentException.class, convNet, () -> LoraDl4j.apply(convNet, CONFIG, "conv"),
                "'conv'", "is a ConvolutionLayer", "expected a DenseLayer or OutputLayer");

        MultiLayerConfiguration rnn = new NeuralNetConfiguration.Builder().seed(1).list()
                .layer(new LSTM.Builder().nIn(4).nOut(5).name("lstm").build())
                .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(5).nOut(3)
                        .activation(Activation.SOFTMAX).build())
                .build();
        MultiLayerNetwork rnnNet = new MultiLayerNetwork(rnn);
        rnnNet.init();
        assertRefused(IllegalArgumentException.class, rnnNet, () -> LoraDl4j.apply(rnnNet, CONFIG, "lstm"),
                "'lstm'", "is a LSTM", "expected a DenseLayer or OutputLayer");
    }

    @Test
    void unsupportedDataTypesAndConfigsAreRefused() {
        // DL4J networks accept DOUBLE, FLOAT or FLOAT16 (named HALF); FLOAT16 is the one lora4j refuses
        MultiLayerNetwork half = Nets.mln(DataType.FLOAT16, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, half, () -> LoraDl4j.apply(half, CONFIG, "layer0"),
                "expected a network of data type FLOAT or DOUBLE, got HALF");
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, net,
                () -> LoraDl4j.apply(net, CONFIG.toBuilder().rank(4).build(), "layer2"),
                "rank must be <= min(nIn, nOut) = 3", "got 4");
        assertRefused(IllegalArgumentException.class, net,
                () -> LoraDl4j.apply(net, CONFIG.toBuilder().dropout(0.1).build(), "layer0"),
                "dropout 0 only", "got dropout 0.1");
        MultiLayerNetwork layerNorm = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().list()
                .layer(new DenseLayer.Builder().nIn(4).nOut(4).hasLayerNorm(true).build())
                .layer(new OutputLayer.Builder().nIn(4).nOut(2).build()).build());
        layerNorm.init();
        assertRefused(IllegalArgumentException.class, layerNorm, () -> LoraDl4j.apply(layerNorm, CONFIG, "0"),
                "has layer norm");
    }

    @Test
    void wrongStateIsRefused() {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 1);
        assertRefused(IllegalArgumentException.class, net, () -> LoraDl4j.merge(net), "with LoRA layers");
        MultiLayerNetwork lora = LoraDl4j.apply(net, CONFIG, "layer0");
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.apply(lora, CONFIG, "layer1"),
                "already a LoRA layer");
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.unmerge(lora), "is not merged");
        LoraDl4j.merge(lora);
        assertRefused(IllegalStateException.class, lora, () -> LoraDl4j.merge(lora), "already merged");
        Supplier<MultiLayerNetwork> uninitialised = () -> new MultiLayerNetwork(net.getLayerWiseConfigurations().clone());
        MultiLayerNetwork raw = uninitialised.get();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> LoraDl4j.apply(raw, CONFIG, "layer0"));
        assertTrue(e.getMessage().contains("call init()"), e.getMessage());
    }
}
