package io.github.lora4j.dl4j;

import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The layer of a {@link LoraDenseLayer}: {@code activation(x W + b + s·(x loraAᵀ) loraBᵀ)}. Its backward writes the
 * gradients of {@code loraA} and {@code loraB} only and returns {@code dL/dx}; it never computes {@code dW} or
 * {@code db}, whose gradient views stay zero (and whose NoOp updater therefore leaves them bitwise unchanged).
 */
public class LoraDenseLayerImpl extends BaseLayer<LoraDenseLayer> implements LoraLayer {

    private static final long serialVersionUID = 1L;

    private transient LoraOps ops;

    /**
     * @param conf     the layer's configuration, holding a {@link LoraDenseLayer}
     * @param dataType the network's data type
     */
    public LoraDenseLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
    }

    @Override
    public LoraOps ops() {
        if (ops == null) {
            ops = new LoraOps(layerConf());
        }
        return ops;
    }

    @Override
    public LoraLayerConf loraConf() {
        return layerConf();
    }

    @Override
    public String describe() {
        return layerId();
    }

    @Override
    protected Pair<INDArray, INDArray> preOutputWithPreNorm(boolean training, boolean forBackprop,
            LayerWorkspaceMgr workspaceMgr) {
        INDArray z = forward(training, forBackprop, workspaceMgr)[0];
        return new Pair<>(z, z);
    }

    private INDArray[] forward(boolean training, boolean forBackprop, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(forBackprop);
        applyDropOutIfNecessary(training, workspaceMgr);
        INDArray[] zu = ops().preOutput(input, params, workspaceMgr,
                forBackprop ? ArrayType.BP_WORKING_MEM : ArrayType.FF_WORKING_MEM, layerId());
        if (maskArray != null) {
            applyMask(zu[0]);
        }
        return zu;
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        INDArray[] zu = forward(true, true, workspaceMgr);
        INDArray delta = layerConf().getActivationFn().backprop(zu[0], epsilon).getFirst();
        if (maskArray != null) {
            applyMask(delta);
        }
        Gradient gradient = new DefaultGradient();
        INDArray dx = ops().backward(input, zu[1], delta, params, gradientViews, gradient, workspaceMgr, layerId());
        return new Pair<>(gradient, backpropDropOutIfPresent(dx));
    }

    @Override
    public void fit(INDArray input, LayerWorkspaceMgr workspaceMgr) {
        throw new UnsupportedOperationException("a LoRA dense layer is trained through its network's fit()");
    }

    @Override
    public boolean isPretrainLayer() {
        return false;
    }

    @Override
    public boolean hasBias() {
        return layerConf().hasBias();
    }
}
