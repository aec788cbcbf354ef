package io.github.lora4j.spark;

import java.util.Collection;
import java.util.Objects;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.BackpropType;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.updater.BaseMultiLayerUpdater;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What training and inference need of a {@link MultiLayerNetwork} or a {@link ComputationGraph}, in one shape: the
 * two DL4J classes offer the same operations under different signatures.
 */
abstract sealed class NetworkAccess {

    /** The network kinds a payload can rebuild. */
    enum Kind { MULTI_LAYER, GRAPH }

    static NetworkAccess of(Model model) {
        Objects.requireNonNull(model, "net must not be null");
        if (model instanceof MultiLayerNetwork m) {
            return new Mln(m);
        }
        if (model instanceof ComputationGraph g) {
            return new Graph(g);
        }
        throw new IllegalArgumentException("expected a MultiLayerNetwork or ComputationGraph, got "
                + model.getClass().getName());
    }

    /**
     * A new, initialised network from its JSON configuration and flat parameter vector (used as is, not copied).
     *
     * @param kind   which class
     * @param json   {@code toJson()} of the configuration
     * @param params the flat parameter vector {@code [1, numParams]} in the network's data type
     * @return access to the new network
     */
    static NetworkAccess build(Kind kind, String json, INDArray params) {
        if (kind == Kind.MULTI_LAYER) {
            MultiLayerNetwork net = new MultiLayerNetwork(MultiLayerConfiguration.fromJson(json));
            net.init(params, false);
            return new Mln(net);
        }
        ComputationGraph graph = new ComputationGraph(ComputationGraphConfiguration.fromJson(json));
        graph.init(params, false);
        return new Graph(graph);
    }

    abstract Kind kind();

    abstract Model model();

    abstract Layer[] layers();

    /** The prefix of this layer's keys in DL4J's {@link org.deeplearning4j.nn.gradient.Gradient}s. */
    abstract String gradientKeyPrefix(int index, Layer layer);

    abstract String json();

    abstract NeuralNetConfiguration defaultConf();

    abstract BackpropType backpropType();

    abstract DataType dataType();

    abstract int iteration();

    abstract int epoch();

    /** Sets the network's iteration and epoch counters (its layers see them at the next forward pass). */
    abstract void setCounts(int iteration, int epoch);

    /** {@code incrementEpochCount()}: epoch + 1, and the layers' counters synchronised, as {@code fit} ends. */
    abstract void incrementEpoch();

    /** The network's updater, created (as {@code fit} would) if it has none. */
    abstract BaseMultiLayerUpdater<?> updater();

    /** The updater state, or null if there is no updater yet or it holds no state; not created. */
    abstract INDArray updaterStateIfPresent();

    abstract Collection<TrainingListener> listeners();

    abstract void setScore(double score);

    abstract double regularizationScore();

    /** Whether the output layers divide their score by the minibatch size ({@code miniBatch(true)}, the default). */
    abstract boolean miniBatch();

    abstract void applyConstraints(int iteration, int epoch);

    abstract void initGradientsView();

    abstract INDArray params();

    /** Sets inputs, labels and masks (null entries or arrays for none). */
    abstract void setData(INDArray[] features, INDArray[] labels, INDArray[] featureMasks, INDArray[] labelMasks);

    /** {@code computeGradientAndScore()} on the data set by {@link #setData}; returns the score. */
    abstract double computeGradientAndScore();

    /** Drops inputs, labels, masks and activations. */
    abstract void clear();

    /** Inference outputs for {@code inputs}, detached from any workspace. */
    abstract INDArray[] output(INDArray[] inputs);

    static final class Mln extends NetworkAccess {
        private final MultiLayerNetwork net;

        Mln(MultiLayerNetwork net) {
            this.net = net;
        }

        @Override
        Kind kind() {
            return Kind.MULTI_LAYER;
        }

        @Override
        Model model() {
            return net;
        }

        @Override
        Layer[] layers() {
            return net.getLayers();
        }

        @Override
        String gradientKeyPrefix(int index, Layer layer) {
            return String.valueOf(index);
        }

        @Override
        String json() {
            return net.getLayerWiseConfigurations().toJson();
        }

        @Override
        NeuralNetConfiguration defaultConf() {
            return net.conf();
        }

        @Override
        BackpropType backpropType() {
            return net.getLayerWiseConfigurations().getBackpropType();
        }

        @Override
        DataType dataType() {
            return net.getLayerWiseConfigurations().getDataType();
        }

        @Override
        int iteration() {
            return net.getIterationCount();
        }

        @Override
        int epoch() {
            return net.getEpochCount();
        }

        @Override
        void setCounts(int iteration, int epoch) {
            net.setIterationCount(iteration);
            net.setEpochCount(epoch);
        }

        @Override
        void incrementEpoch() {
            net.incrementEpochCount();
        }

        @Override
        BaseMultiLayerUpdater<?> updater() {
            return (BaseMultiLayerUpdater<?>) net.getUpdater(true);
        }

        @Override
        INDArray updaterStateIfPresent() {
            return net.getUpdater(false) == null ? null : net.getUpdater(false).getStateViewArray();
        }

        @Override
        Collection<TrainingListener> listeners() {
            return net.getListeners();
        }

        @Override
        void setScore(double score) {
            net.setScore(score);
        }

        @Override
        double regularizationScore() {
            return net.calcRegularizationScore(true);
        }

        @Override
        boolean miniBatch() {
            return net.getOutputLayer().conf().isMiniBatch();
        }

        @Override
        void applyConstraints(int iteration, int epoch) {
            net.applyConstraints(iteration, epoch);
        }

        @Override
        void initGradientsView() {
            if (net.getGradientsViewArray() == null) {
                net.initGradientsView();
            }
        }

        @Override
        INDArray params() {
            return net.params();
        }

        @Override
        void setData(INDArray[] features, INDArray[] labels, INDArray[] featureMasks, INDArray[] labelMasks) {
            net.setInput(features[0]);
            net.setLabels(labels[0]);
            net.setLayerMaskArrays(featureMasks == null ? null : featureMasks[0],
                    labelMasks == null ? null : labelMasks[0]);
        }

        @Override
        double computeGradientAndScore() {
            net.computeGradientAndScore();
            return net.score();
        }

        @Override
        void clear() {
            net.clearLayerMaskArrays();
            net.clear();
        }

        @Override
        INDArray[] output(INDArray[] inputs) {
            return new INDArray[] {net.output(inputs[0], false)};
        }
    }

    static final class Graph extends NetworkAccess {
        private final ComputationGraph graph;

        Graph(ComputationGraph graph) {
            this.graph = graph;
        }

        @Override
        Kind kind() {
            return Kind.GRAPH;
        }

        @Override
        Model model() {
            return graph;
        }

        @Override
        Layer[] layers() {
            return graph.getLayers();
        }

        @Override
        String gradientKeyPrefix(int index, Layer layer) {
            return layer.conf().getLayer().getLayerName();
        }

        @Override
        String json() {
            return graph.getConfiguration().toJson();
        }

        @Override
        NeuralNetConfiguration defaultConf() {
            return graph.conf();
        }

        @Override
        BackpropType backpropType() {
            return graph.getConfiguration().getBackpropType();
        }

        @Override
        DataType dataType() {
            return graph.getConfiguration().getDataType();
        }

        @Override
        int iteration() {
            return graph.getIterationCount();
        }

        @Override
        int epoch() {
            return graph.getEpochCount();
        }

        @Override
        void setCounts(int iteration, int epoch) {
            graph.getConfiguration().setIterationCount(iteration);
            graph.getConfiguration().setEpochCount(epoch);
        }

        @Override
        void incrementEpoch() {
            graph.incrementEpochCount();
        }

        @Override
        BaseMultiLayerUpdater<?> updater() {
            return graph.getUpdater(true);
        }

        @Override
        INDArray updaterStateIfPresent() {
            return graph.getUpdater(false) == null ? null : graph.getUpdater(false).getStateViewArray();
        }

        @Override
        Collection<TrainingListener> listeners() {
            return graph.getListeners();
        }

        @Override
        void setScore(double score) {
            graph.setScore(score);
        }

        @Override
        double regularizationScore() {
            return graph.calcRegularizationScore(true);
        }

        @Override
        boolean miniBatch() {
            return graph.getOutputLayer(0).conf().isMiniBatch();
        }

        @Override
        void applyConstraints(int iteration, int epoch) {
            graph.applyConstraints(iteration, epoch);
        }

        @Override
        void initGradientsView() {
            if (graph.getGradientsViewArray() == null) {
                graph.initGradientsView();
            }
        }

        @Override
        INDArray params() {
            return graph.params();
        }

        @Override
        void setData(INDArray[] features, INDArray[] labels, INDArray[] featureMasks, INDArray[] labelMasks) {
            graph.setInputs(features);
            graph.setLabels(labels);
            graph.setLayerMaskArrays(featureMasks, labelMasks);
        }

        @Override
        double computeGradientAndScore() {
            graph.computeGradientAndScore();
            return graph.score();
        }

        @Override
        void clear() {
            graph.clearLayerMaskArrays();
            graph.clear();
        }

        @Override
        INDArray[] output(INDArray[] inputs) {
            return graph.output(false, inputs);
        }
    }
}
