package io.github.lora4j.dl4j;

import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseOutputLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The layer of a {@link LoraOutputLayer}: {@code activation(x W + b + s·(x loraAᵀ) loraBᵀ)} scored by the base
 * layer's loss. Its backward writes the gradients of {@code loraA} and {@code loraB} only and returns
 * {@code dL/dx}; it never computes {@code dW} or {@code db}.
 */
public class LoraOutputLayerImpl extends BaseOutputLayer<LoraOutputLayer> implements LoraLayer {

    private static final long serialVersionUID = 1L;

    private transient LoraOps ops;

    /**
     * @param conf     the layer's configuration, holding a {@link LoraOutputLayer}
     * @param dataType the network's data type
     */
    public LoraOutputLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
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
    protected INDArray getLabels2d(LayerWorkspaceMgr workspaceMgr, ArrayType arrayType) {
        return labels;
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
        INDArray delta = layerConf().getLossFn().computeGradient(getLabels2d(workspaceMgr, ArrayType.BP_WORKING_MEM),
                zu[0], layerConf().getActivationFn(), maskArray);
        Gradient gradient = new DefaultGradient();
        INDArray dx = ops().backward(input, zu[1], delta, params, gradientViews, gradient, workspaceMgr, layerId());
        return new Pair<>(gradient, backpropDropOutIfPresent(dx));
    }

    @Override
    public void computeGradientAndScore(LayerWorkspaceMgr workspaceMgr) {
        if (input == null || labels == null) {
            return;
        }
        this.gradient = backpropGradient(null, workspaceMgr).getFirst();
        this.score = computeScore(0.0, true, workspaceMgr);
    }

    @Override
    public boolean hasBias() {
        return layerConf().hasBias();
    }
}
