package io.github.lora4j.dl4j;

import java.util.Collection;
import java.util.List;
import java.util.Objects;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.BaseOutputLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
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
 * {@link LoraDl4j#apply}; serialized by DL4J's JSON like any layer. Without adapter ({@link #getLora()} null) it is
 * the frozen form of an untargeted output layer. The layer is {@link LoraOutputLayerImpl}.
 */
public class LoraOutputLayer extends BaseOutputLayer implements LoraLayerConf {

    private static final long serialVersionUID = 1L;

    private Layer base;
    private LoraSettings lora;
    private boolean merged;

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
        this.base = base.clone();
        this.lora = lora;
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> trainingListeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNInNOutSet("LoraOutputLayer", getLayerName(), layerIndex, getNIn(), getNOut());
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
    public Layer getBase() {
        return base;
    }

    /** @param base the replaced layer's configuration (for JSON) */
    public void setBase(Layer base) {
        this.base = base;
    }

    @Override
    public LoraSettings getLora() {
        return lora;
    }

    /** @param lora the adapter settings, or null (for JSON) */
    public void setLora(LoraSettings lora) {
        this.lora = lora;
    }

    @Override
    public boolean isMerged() {
        return merged;
    }

    @Override
    public void setMerged(boolean merged) {
        this.merged = merged;
    }

    @Override
    public LoraOutputLayer clone() {
        LoraOutputLayer c = (LoraOutputLayer) super.clone();
        c.base = base == null ? null : base.clone();
        c.lora = lora == null ? null : LoraSettings.of(lora.toConfig());
        return c;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof LoraOutputLayer) || !super.equals(o)) {
            return false;
        }
        LoraOutputLayer l = (LoraOutputLayer) o;
        return merged == l.merged && Objects.equals(base, l.base) && Objects.equals(lora, l.lora);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), base, lora, merged);
    }
}
