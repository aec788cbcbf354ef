package io.github.lora4j.dl4j;

import java.util.Collection;
import java.util.List;
import java.util.Objects;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.LayerValidation;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * Configuration of a DL4J {@link DenseLayer} with frozen {@code W [nIn, nOut]}, {@code b [nOut]} and a LoRA
 * adapter: {@code out = activation(x W + b + s·(x loraAᵀ) loraBᵀ)}. Made by {@link LoraDl4j#apply}; serialized by
 * DL4J's JSON like any layer (Jackson, by class name). Without adapter ({@link #lora()} null) it is the frozen
 * form of an untargeted dense layer. The layer is {@link LoraDenseLayerImpl}.
 */
public class LoraDenseLayer extends FeedForwardLayer implements LoraLayerConf {

    private static final long serialVersionUID = 1L;

    /** The replaced layer, the adapter settings and the merge state. */
    private LoraLayerState state;
    /** Whether the layer has the bias {@code b}. */
    private boolean hasBias = true;

    /** For JSON. */
    public LoraDenseLayer() {
    }

    /**
     * The LoRA form of {@code base}.
     *
     * @param base a DL4J {@code DenseLayer} without layer norm; copied
     * @param lora the adapter settings, or null for a frozen layer without adapter
     */
    public LoraDenseLayer(DenseLayer base, LoraSettings lora) {
        Objects.requireNonNull(base, "base must not be null");
        LayerConfs.copyFeedForward(base, this);
        this.state = new LoraLayerState(base, lora);
        this.hasBias = base.hasBias();
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> trainingListeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNInNOutSet("LoraDenseLayer", getLayerName(), layerIndex, getNIn(), getNOut());
        LayerConfs.checkSettings(this, layerIndex, networkDataType);
        return LayerConfs.wire(new LoraDenseLayerImpl(conf, networkDataType), conf, trainingListeners, layerIndex,
                layerParamsView, initializeParams);
    }

    @Override
    public ParamInitializer initializer() {
        return LoraParamInitializer.getInstance();
    }

    @Override
    public IUpdater getUpdaterByParam(String paramName) {
        return LayerConfs.updaterByParam(this, paramName);
    }

    @Override
    public List<Regularization> getRegularizationByParam(String paramName) {
        return LayerConfs.regularizationByParam(this, paramName);
    }

    @Override
    public boolean isPretrainParam(String paramName) {
        return false;
    }

    @Override
    public LayerMemoryReport getMemoryReport(InputType inputType) {
        return LayerConfs.memoryReport(this, inputType);
    }

    @Override
    public LoraLayerState getState() {
        return state;
    }

    /** @param state the LoRA part of the configuration (for JSON) */
    public void setState(LoraLayerState state) {
        this.state = state;
    }

    @Override
    public boolean hasBias() {
        return hasBias;
    }

    /**
     * Whether the layer has a bias (bean form of {@link #hasBias()}, for JSON).
     *
     * @return the same as {@link #hasBias()}
     */
    public boolean isHasBias() {
        return hasBias;
    }

    /** @param hasBias whether the layer has a bias (for JSON) */
    public void setHasBias(boolean hasBias) {
        this.hasBias = hasBias;
    }

    @Override
    public LoraDenseLayer clone() {
        LoraDenseLayer c = (LoraDenseLayer) super.clone();
        c.state = state == null ? null : state.copy();
        return c;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof LoraDenseLayer) || !super.equals(o)) {
            return false;
        }
        LoraDenseLayer l = (LoraDenseLayer) o;
        return hasBias == l.hasBias && Objects.equals(state, l.state);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), state, hasBias);
    }
}
