# EC2 authorization (identity policies, condition keys, explicit deny, DryRun) and EC2's CloudTrail records.
DEV=arn:aws:iam::111122223333:user/dev
t 'ebsim iam create-user --user-name dev --query User.Arn --output text'
t "ebsim --principal $DEV ec2 create-volume --size 8"
cat > dev.json <<'JSON'
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "ec2:CreateVolume", "Resource": "*", "Condition": {"NumericLessThanEquals": {"ec2:VolumeSize": "8"}}},
  {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "arn:aws:ec2:*:*:volume/*", "Condition": {"StringEquals": {"ec2:CreateAction": "CreateVolume"}}},
  {"Effect": "Allow", "Action": ["ec2:Describe*", "ec2:DeleteVolume"], "Resource": "*"},
  {"Sid": "KeepTagged", "Effect": "Deny", "Action": "ec2:DeleteVolume", "Resource": "*", "Condition": {"StringEquals": {"ec2:ResourceTag/keep": "yes"}}}]}
JSON
t 'ebsim iam put-user-policy --user-name dev --policy-name volumes --policy-document file://dev.json'
t "ebsim --principal $DEV ec2 create-volume --size 16"
t "ebsim --principal $DEV ec2 create-volume --size 8 --dry-run"
t "ebsim --principal $DEV ec2 create-volume --size 16 --dry-run"
VOL=$(ebsim --principal $DEV ec2 create-volume --size 8 --tag-specifications 'ResourceType=volume,Tags=[{Key=keep,Value=yes}]' --query VolumeId --output text)
t "ebsim --principal $DEV ec2 describe-volumes --volume-ids $VOL --query 'Volumes[0].[Size,Tags[0].Value]' --output text"
t "ebsim --principal $DEV ec2 delete-volume --volume-id $VOL"
t "ebsim --principal $DEV ec2 get-ebs-encryption-by-default"
t "ebsim ec2 delete-volume --volume-id $VOL"
t "ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=EventSource,AttributeValue=ec2.amazonaws.com --query 'Events[].[EventName,Username,ReadOnly]' --output text"
t "ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=ResourceName,AttributeValue=$VOL --query 'Events[].[EventName,Username,Resources[0].ResourceType,Resources[0].ResourceName]' --output text"
t "ebsim cloudtrail lookup-events --lookup-attributes AttributeKey=EventName,AttributeValue=DeleteVolume --max-results 2 --query 'Events[].CloudTrailEvent' --output text | tr ',' '\n' | grep -E '\"(errorCode|volumeId|_return)\"'"
