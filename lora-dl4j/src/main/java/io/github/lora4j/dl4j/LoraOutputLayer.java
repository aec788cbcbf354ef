package io.github.lora4j.dl4j;

import java.util.Collection;
import java.util.List;
import java.util.Objects;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.LayerValidation;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * Configuration of a DL4J {@link OutputLayer} with frozen {@code W [nIn, nOut]}, {@code b [nOut]} and a LoRA
 * adapter: {@code out = activation(x W + b + s·(x loraAᵀ) loraBᵀ)}, scored by the base layer's loss. Made by
 * {@link LoraDl4j#apply}; serialized by DL4J's JSON like any layer. Without adapter ({@link #lora()} null) it is
 * the frozen form of an untargeted output layer. The layer is {@link LoraOutputLayerImpl}.
 */
public class LoraOutputLayer extends BaseOutputLayer implements LoraLayerConf {

    private static final long serialVersionUID = 1L;

    /** The replaced layer, the adapter settings and the merge state. */
    private LoraLayerState state;

    /** For JSON. */
    public LoraOutputLayer() {
    }

    /**
     * The LoRA form of {@code base}.
     *
     * @param base a DL4J {@code OutputLayer}; copied
     * @param lora the adapter settings, or null for a frozen layer without adapter
     */
    public LoraOutputLayer(OutputLayer base, LoraSettings lora) {
        Objects.requireNonNull(base, "base must not be null");
        LayerConfs.copyFeedForward(base, this);
        setLossFn(base.getLossFn());
        setHasBias(base.hasBias());
        this.state = new LoraLayerState(base, lora);
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> trainingListeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNInNOutSet("LoraOutputLayer", getLayerName(), layerIndex, getNIn(), getNOut());
        LayerConfs.checkSettings(this, layerIndex, networkDataType);
        return LayerConfs.wire(new LoraOutputLayerImpl(conf, networkDataType), conf, trainingListeners, layerIndex,
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
    public LoraOutputLayer clone() {
        LoraOutputLayer c = (LoraOutputLayer) super.clone();
        c.state = state == null ? null : state.copy();
        return c;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof LoraOutputLayer) || !super.equals(o)) {
            return false;
        }
        LoraOutputLayer l = (LoraOutputLayer) o;
        return Objects.equals(state, l.state);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), state);
    }
}
