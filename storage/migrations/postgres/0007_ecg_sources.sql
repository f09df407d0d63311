-- The ECG report says who measured each value (the device or the automatic
-- measurement), beside the values themselves.
UPDATE report_templates SET fields =
 '[{"key":"rhythm","label_zh":"节律","label_en":"Rhythm","multiline":false},{"key":"rate","label_zh":"心率","label_en":"Rate","multiline":false},{"key":"intervals","label_zh":"间期 (PR/QRS/QT/QTc)","label_en":"Intervals (PR/QRS/QT/QTc)","multiline":false},{"key":"axis","label_zh":"电轴","label_en":"Axis","multiline":false},{"key":"sources","label_zh":"测量来源","label_en":"Measured by","multiline":false},{"key":"conclusion","label_zh":"心电图诊断","label_en":"Conclusion","multiline":true},{"key":"automatic","label_zh":"自动测量（仅供参考）","label_en":"Automatic measurements (for reference)","multiline":true}]'
WHERE id = 'ecg';
