package io.github.lora4j.dl4j;

import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Small networks and data for the tests. */
final class Nets {

    static final int IN = 6;
    static final int HIDDEN = 10;
    static final int CLASSES = 3;

    private Nets() {
    }

    /** Dense(IN→HIDDEN, tanh) → Dense(HIDDEN→HIDDEN, relu) → Output(HIDDEN→CLASSES, softmax, MCXENT). */
    static MultiLayerNetwork mln(DataType type, IUpdater updater, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(seed).dataType(type).updater(updater).weightInit(WeightInit.XAVIER)
                .list()
                .layer(new DenseLayer.Builder().nIn(IN).nOut(HIDDEN).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().nIn(HIDDEN).nOut(HIDDEN).activation(Activation.SIGMOID).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(HIDDEN).nOut(CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** in → "fc1" (dense, tanh) → "out" (softmax output), plus "side" (dense) feeding nothing but "out" too. */
    static ComputationGraph graph(DataType type, IUpdater updater, long seed) {
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(seed).dataType(type).updater(updater).weightInit(WeightInit.XAVIER)
                .graphBuilder()
                .addInputs("in")
                .addLayer("fc1", new DenseLayer.Builder().nIn(IN).nOut(HIDDEN).activation(Activation.TANH).build(), "in")
                .addLayer("side", new DenseLayer.Builder().nIn(IN).nOut(4).activation(Activation.TANH).build(), "in")
                .addVertex("merge", new org.deeplearning4j.nn.conf.graph.MergeVertex(), "fc1", "side")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(HIDDEN + 4)
                        .nOut(CLASSES).activation(Activation.SOFTMAX).build(), "merge")
                .setOutputs("out")
                .build();
        ComputationGraph g = new ComputationGraph(conf);
        g.init();
        return g;
    }

    /**
     * A classification task: label = argmax of {@code x·T} for a random teacher {@code T [IN, CLASSES]} drawn from
     * {@code taskSeed}; features from {@code dataSeed}.
     */
    static DataSet task(DataType type, long taskSeed, long dataSeed, int n) {
        INDArray teacher = gaussian(taskSeed, IN, CLASSES);
        INDArray x = gaussian(dataSeed, n, IN);
        INDArray scores = x.mmul(teacher);
        INDArray labels = Nd4j.zeros(DataType.DOUBLE, n, CLASSES);
        for (int i = 0; i < n; i++) {
            labels.putScalar(i, scores.getRow(i).argMax().getInt(0), 1.0);
        }
        return new DataSet(x.castTo(type), labels.castTo(type));
    }

    /** A {@code [rows, cols]} DOUBLE matrix of standard normals from {@code seed} (java.util.Random: portable). */
    static INDArray gaussian(long seed, int rows, int cols) {
        java.util.Random r = new java.util.Random(seed);
        double[][] v = new double[rows][cols];
        for (double[] row : v) {
            for (int j = 0; j < cols; j++) {
                row[j] = r.nextGaussian();
            }
        }
        return Nd4j.create(v);
    }

    /** A bitwise copy of {@code a} (never a view). */
    static INDArray snapshot(INDArray a) {
        return a == null ? null : a.dup();
    }
}
