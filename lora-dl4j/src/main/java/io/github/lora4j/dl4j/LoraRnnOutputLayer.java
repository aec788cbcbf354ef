package io.github.lora4j.dl4j;

import java.util.Collection;
import java.util.List;
import java.util.Objects;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.LayerValidation;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * Configuration of a DL4J {@link RnnOutputLayer} with frozen {@code W [nIn, nOut]}, {@code b [nOut]} and a LoRA
 * adapter: the dense map {@code activation(x W + b + s·(dropout(x) loraAᵀ) loraBᵀ)} at every time step of an input
 * {@code [minibatch, nIn, T]} (NCW) or {@code [minibatch, T, nIn]} (NWC, the base layer's {@code dataFormat}), scored
 * by the base layer's loss with DL4J's per-time-step or per-output label masks. It is an {@link RnnOutputLayer}, so
 * DL4J's input types, preprocessors and evaluation treat it as one. Made by {@link LoraDl4j#apply}; serialized by
 * DL4J's JSON like any layer. Without adapter ({@link #lora()} null) it is the frozen form of an untargeted
 * {@code RnnOutputLayer}. The layer is {@link LoraRnnOutputLayerImpl}.
 */
public class LoraRnnOutputLayer extends RnnOutputLayer implements LoraLayerConf {

    private static final long serialVersionUID = 1L;

    /** The replaced layer, the adapter settings and the merge state. */
    private LoraLayerState state;

    /** For JSON. */
    public LoraRnnOutputLayer() {
    }

    /**
     * The LoRA form of {@code base}.
     *
     * @param base a DL4J {@code RnnOutputLayer}; copied
     * @param lora the adapter settings, or null for a frozen layer without adapter
     */
    public LoraRnnOutputLayer(RnnOutputLayer base, LoraSettings lora) {
        Objects.requireNonNull(base, "base must not be null");
        LayerConfs.copyFeedForward(base, this);
        setLossFn(base.getLossFn());
        setHasBias(base.hasBias());
        setRnnDataFormat(base.getRnnDataFormat());
        this.state = new LoraLayerState(base, lora);
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> trainingListeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNInNOutSet("LoraRnnOutputLayer", getLayerName(), layerIndex, getNIn(), getNOut());
        LayerConfs.checkSettings(this, layerIndex, networkDataType);
        return LayerConfs.wire(new LoraRnnOutputLayerImpl(conf, networkDataType), conf, trainingListeners, layerIndex,
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
    public LoraRnnOutputLayer clone() {
        LoraRnnOutputLayer c = (LoraRnnOutputLayer) super.clone();
        c.state = state == null ? null : state.copy();
        return c;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof LoraRnnOutputLayer) || !super.equals(o)) {
            return false;
        }
        return Objects.equals(state, ((LoraRnnOutputLayer) o).state);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), state);
    }
}
