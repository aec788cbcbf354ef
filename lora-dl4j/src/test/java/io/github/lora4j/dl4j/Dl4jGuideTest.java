package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.PeftAdapterConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.LSTM;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions.LossFunction;

/**
 * The Java snippets of docs/dl4j.md, run: each region between {@code // docs/dl4j.md: <name>} and {@code // end} is
 * one of the guide's code blocks, shown as it is here (lora-examples' {@code DocSnippetsTest} checks that).
 */
class Dl4jGuideTest {

    @TempDir
    Path tmp;

    @Test
    void applyFitSummarySaveMergeUnload() throws IOException {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        DataSet taskB = Nets.task(DataType.FLOAT, 5, 6, 256);
        DataSetIterator trainB = new ListDataSetIterator<>(taskB.asList(), 32);
        Path dir = tmp.resolve("adapter");
        // docs/dl4j.md: quick start
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).dropout(0.05).build();
        MultiLayerNetwork lora = LoraDl4j.apply(net, cfg, "layer0", "layer1", "layer2");   // names, "0", or a Pattern
        lora.fit(trainB, 3);                          // trains loraA/loraB only; W and b stay bitwise unchanged
        System.out.print(LoraDl4j.summary(lora));     // not lora.summary(): DL4J cannot see frozen W inside a layer
        LoraDl4j.saveAdapter(lora, dir);              // PEFT files; F32 here, F64 for a DOUBLE network
        LoraDl4j.merge(lora);                         // W += s·(B A)ᵀ in place: base cost, same outputs
        LoraDl4j.unmerge(lora);                       // W bit for bit as before
        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);   // DL4J's own layers, for deployment
        // end
        assertEquals(cfg.rank() * ((long) (6 + 10) + (10 + 10) + (10 + 3)), LoraDl4j.trainableParameterCount(lora));
        assertTrue(plain.output(taskB.getFeatures()).equalsWithEps(lora.output(taskB.getFeatures()), 1e-5));
        for (int i = 0; i < 3; i++) {
            assertBitwise(net.getLayer(i).getParam("W"), lora.getLayer(i).getParam("W"), "W of layer " + i);
        }

        MultiLayerNetwork other = LoraDl4j.apply(net, LoraConfig.builder().rank(2).alpha(4).build(), "layer0",
                "layer1", "layer2");
        // docs/dl4j.md: load
        PeftAdapterConfig file = LoraDl4j.loadAdapter(other, dir);   // same layer names and rank; alpha and
        double dropout = file.loraDropout();                         // lora_dropout come from the file
        // end
        assertEquals(0.05, dropout);
        assertBitwise(lora.output(taskB.getFeatures()), other.output(taskB.getFeatures()), "reloaded adapter");
    }

    @Test
    void dora() throws IOException {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        DataSet taskB = Nets.task(DataType.FLOAT, 5, 6, 256);
        DataSetIterator trainB = new ListDataSetIterator<>(taskB.asList(), 32);
        Path dir = tmp.resolve("dora");
        // docs/dl4j.md: dora
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).dropout(0.05).useDora(true).build();
        MultiLayerNetwork dora = LoraDl4j.apply(net, cfg, "layer0", "layer2");   // + loraMagnitude [nOut] per layer
        dora.fit(trainB, 3);                          // trains loraA, loraB and loraMagnitude; W and b bitwise unchanged
        LoraDl4j.saveAdapter(dora, dir);              // PEFT's DoRA files: use_dora, <layer>.lora_magnitude_vector
        LoraDl4j.merge(dora);                         // W = c ⊙ (W + s·(B A)ᵀ), lora-core's exact merge
        LoraDl4j.unmerge(dora);                       // W bit for bit as before
        // end
        assertEquals(cfg.rank() * ((long) (6 + 10) + (10 + 3)) + 10 + 3, LoraDl4j.trainableParameterCount(dora));
        assertTrue(Files.readString(dir.resolve("adapter_config.json")).contains("use_dora"));
        for (int i = 0; i < 3; i++) {
            assertBitwise(net.getLayer(i).getParam("W"), dora.getLayer(i).getParam("W"), "W of layer " + i);
        }
    }

    @Test
    void aRecurrentNetwork() {
        int features = 4;
        int steps = 6;
        // docs/dl4j.md: recurrent
        MultiLayerNetwork rnn = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().updater(new Adam(0.03))
                .list()
                .layer(new DenseLayer.Builder().name("fc0").nOut(6).activation(Activation.TANH).build())
                .layer(new LSTM.Builder().name("lstm").nOut(6).build())
                .layer(new RnnOutputLayer.Builder(LossFunction.MCXENT).name("out").nOut(3)
                        .activation(Activation.SOFTMAX).build())
                .setInputType(InputType.recurrent(features, steps)).build());
        rnn.init();
        // fc0 sees [mb·T, 4] through DL4J's RnnToFeedForwardPreProcessor; out is a dense map per time step;
        // the LSTM is frozen in a FrozenLayerWithBackprop and passes the gradient down to fc0's adapter
        MultiLayerNetwork lora = LoraDl4j.apply(rnn, LoraConfig.builder().rank(2).alpha(4).build(), "fc0", "out");
        // end
        DataSet data = LoraDl4jRnnTest.task(DataType.FLOAT, RNNFormat.NCW, 1, 2, 8);
        INDArray before = lora.getLayer(1).params().dup();
        lora.fit(data);
        assertBitwise(before, lora.getLayer(1).params(), "the LSTM stays frozen");
        assertTrue(lora.getLayer(0).getParam("loraB").amaxNumber().doubleValue() > 0, "fc0's adapter trains");
    }

    @Test
    void precision() throws IOException {
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new Adam(0.01), 3),
                LoraConfig.builder().rank(2).alpha(4).build(), "layer0");
        Path dir = tmp.resolve("a");
        Path f32 = tmp.resolve("b");
        // docs/dl4j.md: precision
        LoraDl4j.saveAdapter(lora, dir);                    // a DOUBLE network: F64 tensors, reload bit for bit
        LoraDl4j.saveAdapter(lora, f32, DataType.FLOAT);    // F32 (or HALF, BFLOAT16) when size matters more
        // end
        assertTrue(Files.size(dir.resolve("adapter_model.safetensors")) > Files.size(f32.resolve(
                "adapter_model.safetensors")));
    }
}
